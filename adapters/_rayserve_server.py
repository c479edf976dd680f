"""The Ray Serve server of adapters/rayserve.py: run as `python -m adapters._rayserve_server`.

One private Ray instance per server (its own GCS, raylet and object store in a temp folder
`sb-ray-<pid>-*`, removed at exit and by `servingbench clean` after a kill -9), Serve's HTTP
proxy on the given host and port, and one deployment whose replicas each load the variant.
The target's threads (SERVINGBENCH_THREADS, from its CPU set) are the instance's CPUs and are
split between the replicas, so one replica computes with all of them and four with a
quarter each: the same cores for every stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import serve


@serve.deployment
class Model:
    def __init__(self, variant_dir: str, threads: int, max_batch: int, wait_s: float) -> None:
        os.environ["SERVINGBENCH_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
        from harness.runtime import load_predictor, read_variant, warmup_batch

        self.info = read_variant(Path(variant_dir))
        self.predict = load_predictor(Path(variant_dir))
        self.predict(warmup_batch(self.info))  # the first call allocates; not on a request
        # compute off the replica's event loop: it keeps taking requests into the next batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self.max_batch = max_batch
        if max_batch > 0:  # serve.batch's setters (the decorator's values are defaults)
            batched: Any = self.batched
            batched.set_max_batch_size(max_batch)
            batched.set_batch_wait_timeout_s(wait_s)

    async def infer(self, inputs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.predict, inputs)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def batched(self, batches: list[Any]) -> list[Any]:
        import numpy as np

        sizes = [len(b) for b in batches]
        outputs = await self.infer(np.concatenate(batches))
        bounds = np.cumsum(sizes)[:-1]
        return list(np.split(outputs, bounds))

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        from harness.runtime import as_batch

        if request.url.path.rstrip("/") == "/health":
            return JSONResponse({"status": "ready", "variant": self.info["variant"],
                                 "batching": self.max_batch > 0})  # fmt: skip
        if request.method != "POST" or request.url.path.rstrip("/") != "/predict":
            return JSONResponse({"error": "not found"}, status_code=404)
        try:
            values = json.loads(await request.body())["inputs"]
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad request body: {exc}"}, status_code=400)
        try:
            inputs = as_batch(values, self.info)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        outputs = await (self.batched(inputs) if self.max_batch > 0 else self.infer(inputs))
        body = json.dumps({"outputs": outputs.tolist()}, separators=(",", ":"))
        return Response(body, media_type="application/json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="servingbench Ray Serve server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-ongoing", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=0)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    args = parser.parse_args(argv)
    from harness.runtime import thread_count

    threads = thread_count()
    per_replica = max(1, threads // args.replicas)
    # short: Ray's unix sockets live under it (a path over 107 bytes cannot be bound)
    temp = tempfile.mkdtemp(prefix=f"sb-ray-{os.getpid()}-")
    stop = threading.Event()
    # Ray's control plane on loopback too: on Linux it binds the machine's address unless
    # told it is a single-machine instance (the knob Ray keeps for macOS and Windows)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    try:
        ray.init(address="local", num_cpus=max(threads, args.replicas), include_dashboard=False,
                 _temp_dir=temp, _node_ip_address="127.0.0.1", log_to_driver=True,
                 configure_logging=False)  # fmt: skip
        serve.start(http_options={"host": args.host, "port": args.port})
        app = Model.options(  # type: ignore[attr-defined]
            num_replicas=args.replicas,
            max_ongoing_requests=args.max_ongoing,
            ray_actor_options={"num_cpus": threads / args.replicas},
        ).bind(os.environ["SB_VARIANT_DIR"], per_replica, args.max_batch,
               args.batch_wait_ms / 1000)  # fmt: skip
        serve.run(app, name="servingbench", route_prefix="/")
        # after ray.init, whose own SIGTERM handler would end this process without cleanup
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        batching = args.max_batch or "off"
        print(f"Ray Serve ready on {args.host}:{args.port}: {args.replicas} replica(s), "
              f"{per_replica} thread(s) each, batching {batching}", flush=True)  # fmt: skip
        stop.wait()
    finally:
        # no graceful serve.shutdown(): the launcher's TERM reached Ray's processes too
        # (one process group), and a drain would outlast its grace period
        shutil.rmtree(temp, ignore_errors=True)
        # ray.shutdown() can wait long on processes the TERM already ended: bounded
        done = threading.Thread(target=_quietly(ray.shutdown), daemon=True)
        done.start()
        done.join(3)
        shutil.rmtree(temp, ignore_errors=True)
        os._exit(0)


def _quietly(call: Any) -> Any:
    def run() -> None:
        with contextlib.suppress(Exception):
            call()

    return run


if __name__ == "__main__":
    main()
