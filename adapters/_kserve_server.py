"""The KServe server process: one servingbench variant as a `kserve.Model` in `ModelServer`.

Run as `python -m adapters._kserve_server --variant-dir DIR --http-port P [...]` with the
kserve environment's Python (adapters/kserve.py builds the command). Not an adapter module:
the leading underscore keeps the registry from scanning it, and it imports kserve, which
cannot share a process with the harness's gRPC stack.

What KServe 0.21 does by itself, and what this module changes:
- `import kserve` parses `sys.argv` with its own argparse parser (prefix matching: our
  `--workers`/`--model-name` would feed it): argv is parsed here first and then reduced to
  the program name before kserve is imported; spawned REST workers inherit that argv.
- it binds 0.0.0.0 (uvicorn) and [::] (gRPC) with no host option: the REST server's uvicorn
  config and gRPC's `add_insecure_port` are patched to bind `--host` (loopback locally,
  0.0.0.0 in a pod), and gRPC's SO_REUSEPORT is turned off so a taken port fails loudly.
- it logs every request (access log, per-request timing and gRPC method lines): those
  loggers are set to `--log-level` (WARNING by default) and uvicorn's access log is off.
- `predict` runs on the event loop: inference is offloaded to one thread per process.
- `--workers N` spawns N REST processes and pickles the model into each: the model pickles
  as (name, variant folder) and loads its predictor again in the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

OUTPUT = "output"  # the v2 output tensor's name (the input's name is not checked)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="servingbench's KServe ModelServer")
    parser.add_argument("--variant-dir", required=True, type=Path)
    parser.add_argument("--model-name", default="model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0, help="0: no gRPC server")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--grace-s", type=int, default=5, help="shutdown grace period")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # kserve reads these at import time: its argv parser, and its log level
    sys.argv = sys.argv[:1]
    os.environ["KSERVE_LOGLEVEL"] = args.log_level.upper()
    # FastAPI warns once per route that KServe's ORJSONResponse is deprecated: not ours to
    # fix; the environment variable carries the filter into spawned workers
    quiet = "ignore:ORJSONResponse is deprecated"
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), quiet)))
    warnings.filterwarnings("ignore", "ORJSONResponse is deprecated")
    import kserve
    from kserve import model_server

    _bind_to(args.host)
    # a dict, not a file: ModelServer applies it here and each spawned worker again
    model_server.args.log_config_file = _log_config(args.log_level.upper())
    model = _restore(args.model_name, str(args.variant_dir))
    server = kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.grpc_port > 0,
        workers=args.workers,
        enable_docs_url=False,
        enable_latency_logging=False,
        grace_period=args.grace_s,
    )
    grpc = f", gRPC {args.host}:{args.grpc_port}" if args.grpc_port else ""
    print(
        f"kserve {metadata.version('kserve')}: model {args.model_name!r} loaded; serving REST "
        f"{args.host}:{args.http_port}{grpc}, {args.workers} worker(s)",
        flush=True,
    )
    server.start([model])


def _bind_to(host: str) -> None:
    """Make KServe's REST and gRPC servers listen on `host` only (see the module docstring)."""
    import grpc.aio
    from kserve.protocol.rest import server as rest

    build_rest = rest.RESTServer.__init__

    def rest_init(self: Any, *args: Any, **kwargs: Any) -> None:
        build_rest(self, *args, **kwargs)
        # uvicorn reads the config when it binds (and spawned workers get it pickled)
        self.config.host = host
        self.config.access_log = False

    rest.RESTServer.__init__ = rest_init
    make_server = grpc.aio.server

    def grpc_server(*args: Any, **kwargs: Any) -> Any:
        # with SO_REUSEPORT a second server would share a taken port instead of failing
        kwargs["options"] = [*(kwargs.get("options") or ()), ("grpc.so_reuseport", 0)]
        server = make_server(*args, **kwargs)
        add_port = server.add_insecure_port

        def add_insecure_port(address: str) -> int:
            port = address.rsplit(":", 1)[1]
            return int(add_port(f"{_grpc_host(host)}:{port}"))

        server.add_insecure_port = add_insecure_port
        return server

    grpc.aio.server = grpc_server


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_config(level: str) -> dict[str, Any]:
    """KServe's own logging config with every logger at `level` and no access log."""
    from kserve.logging import KSERVE_LOG_CONFIG

    config: dict[str, Any] = copy.deepcopy(KSERVE_LOG_CONFIG)
    for logger in config["loggers"].values():
        logger["level"] = level
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    return config


def _restore(name: str, variant_dir: str) -> Any:
    """A loaded model: at startup, and when a spawned REST worker unpickles it."""
    model = model_class()(name, variant_dir)
    model.load()
    return model


@cache
def model_class() -> type[Any]:
    """The kserve.Model subclass, built on first use: kserve must not be imported before
    `main` has taken argv away from it (a class in a function pickles through __reduce__)."""
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from harness.runtime import as_batch, load_predictor, read_variant, takes_text, warmup_batch

    class VariantModel(kserve.Model):
        def __init__(self, name: str, variant_dir: str) -> None:
            super().__init__(name)
            self.variant_dir = variant_dir
            self.info: dict[str, Any] = {}
            self._predict: Any = None
            self._executor: ThreadPoolExecutor | None = None

        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            # neither an onnxruntime session nor a thread pool pickles: reload instead
            return _restore, (self.name, self.variant_dir)

        def load(self) -> bool:
            self.info = read_variant(Path(self.variant_dir))
            self._predict = load_predictor(self.variant_dir)
            self._predict(warmup_batch(self.info))  # the first call allocates: not a request's
            if takes_text(self.info):  # the pipeline's time split, on KServe's /metrics page
                from harness.embedding import Counters

                self._predict.counters = Counters()
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
            self.ready = True
            return True

        def _batch(self, values: Any) -> np.ndarray:
            try:  # numbers of the variant's shape, or strings for a text encoder
                return as_batch(values, self.info)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from exc

        async def predict(
            self,
            payload: Any,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> Any:
            if isinstance(payload, InferRequest):  # v2 REST and gRPC
                datatype = "BYTES" if takes_text(self.info) else "FP32"
                if len(payload.inputs) != 1 or payload.inputs[0].datatype != datatype:
                    raise InvalidInput(f"expected one {datatype} input tensor")
                try:
                    values = payload.inputs[0].as_numpy()
                except ValueError as exc:
                    raise InvalidInput(f"input tensor: {exc}") from exc
            elif isinstance(payload, dict) and isinstance(payload.get("instances"), list):
                values = payload["instances"]  # v1
            else:
                raise InvalidInput('expected {"instances": [...]} or a v2 inference request')
            batch = self._batch(values)
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self._predict, batch)
            outputs = np.ascontiguousarray(outputs, np.float32)
            if not isinstance(payload, InferRequest):
                return {"predictions": outputs.tolist()}
            tensor = InferOutput(OUTPUT, list(outputs.shape), "FP32", data=outputs)
            if payload.from_grpc:
                # raw bytes now: KServe's to_grpc tests an ndarray's truth value and fails
                tensor.set_data_from_numpy(outputs, binary_data=True)
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=[tensor],
                use_binary_outputs=payload.use_binary_outputs,
            )

        def stop(self) -> None:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            super().stop()

    return VariantModel


if __name__ == "__main__":
    main()
