"""`servingbench new-adapter NAME`: a working adapter skeleton and its conformance test.

The skeleton serves the bare model behind the plain-JSON protocol with the standard
library's ThreadingHTTPServer (no dependency beyond the harness), so it passes the
conformance suite as generated; an author then swaps the server for the framework's own
and keeps the tests green. See docs/adding-an-adapter.md.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
from pathlib import Path
from string import Template

from harness.errors import ServingBenchError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class ScaffoldError(ServingBenchError):
    """The adapter name or the place to write it is not acceptable; says why."""


def check_name(name: str, top_level: bool) -> None:
    """A lowercase identifier, not a kind already registered, not a module it would shadow."""
    from harness import registry

    if not NAME.match(name):
        raise ScaffoldError(
            f"adapter name {name!r}: use lowercase letters, digits and '_', starting with a "
            "letter (it is the module name and the scenario's `kind`)"
        )
    if keyword.iskeyword(name):
        raise ScaffoldError(f"adapter name {name!r} is a Python keyword")
    if name in registry.adapters():
        existing = registry.adapters()[name]
        raise ScaffoldError(f"adapter kind {name!r} already exists ({existing.__module__})")
    if name in sys.stdlib_module_names or name in ("harness", "adapters"):
        raise ScaffoldError(f"adapter name {name!r} would shadow the module of that name")
    # a top-level module (--dir) must not hide an installed package of the same name
    if top_level and importlib.util.find_spec(name) is not None:
        raise ScaffoldError(f"adapter name {name!r} would shadow the installed module {name}")


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def new_adapter(name: str, directory: Path | None = None, root: Path | None = None) -> list[Path]:
    """Write `<name>.py` and `test_<name>.py`; return their paths.

    Default: `adapters/<name>.py` and `tests/adapters/test_<name>.py` under `root` (the
    current folder: a servingbench checkout). With `directory`: both files in it, the
    adapter a top-level module that its test imports by name.
    """
    top_level = directory is not None
    check_name(name, top_level)
    if directory is not None:
        module_path, test_path = directory / f"{name}.py", directory / f"test_{name}.py"
        module = name
    else:
        base = root or Path.cwd()
        if not (base / "adapters" / "__init__.py").exists():
            raise ScaffoldError(
                f"no adapters/ package in {base}: run from a servingbench checkout or pass --dir"
            )
        module_path = base / "adapters" / f"{name}.py"
        test_path = base / "tests" / "adapters" / f"test_{name}.py"
        module = f"adapters.{name}"
    existing = [str(p) for p in (module_path, test_path) if p.exists()]
    if existing:
        raise ScaffoldError(f"will not overwrite {', '.join(existing)}")
    # import order as ruff's isort wants it: `adapters` and `harness` share a section
    values = {"kind": name, "cls": camel(name), "module": module, "gap": "\n" * top_level}
    module_path.parent.mkdir(parents=True, exist_ok=True)
    test_path.parent.mkdir(parents=True, exist_ok=True)
    module_path.write_text(Template(ADAPTER).substitute(values))
    test_path.write_text(Template(TEST).substitute(values))
    return [module_path, test_path]


ADAPTER = '''\
"""${cls}: the bare model behind the plain-JSON protocol (`servingbench new-adapter`).

Recipe (keep it true as the skeleton becomes the real framework)
- serves: eager, torchscript, onnx, onnx-int8 (through `harness.runtime`)
- files: none (the server reads the variant folder directly)
- starts: `python -m ${module} --host H --port P`: a stdlib ThreadingHTTPServer
- ready: `GET /health` answers 200 once the model is loaded, 503 before
- protocol: plain-json, `POST /predict` (docs/protocol.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from harness.adapter import Adapter, AdapterConfig, ProcessSpec
from harness.environments import PROJECT_ROOT, PYTHON
from harness.variants import BuiltVariant


class ${cls}Config(AdapterConfig):
    kind: Literal["${kind}"]


class ${cls}Adapter(Adapter[${cls}Config]):
    kind: ClassVar[str] = "${kind}"
    config_class = ${cls}Config
    variants = frozenset({"eager", "torchscript", "onnx", "onnx-int8"})
    description = "${kind}: plain JSON over a stdlib HTTP server (scaffold)"
    requires = ()  # modules the server imports, e.g. ("myframework",): checked by availability()

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        argv = [PYTHON, "-m", __name__, "--host", host, "--port", str(ports["http"])]
        env = {"SB_VARIANT_DIR": str(variant.path), "PYTHONPATH": _pythonpath()}
        return ProcessSpec(argv=argv, env=env)


def _pythonpath() -> str:
    # `python -m` in the server must find this module (wherever it lives) and the harness
    here = Path(__file__).resolve().parents[__name__.count(".")]
    parts = [str(here), str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(dict.fromkeys(p for p in parts if p))


# ---------------------------------------------------------------- the server itself


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    predict: Any = None  # set once the model is loaded: /health is 200 from then on
    shape: tuple[int, ...] = ()
    lock = threading.Lock()  # one inference at a time, on the threads the launcher set

    def load(self, variant_dir: Path) -> None:
        from harness.runtime import load_predictor, read_variant

        self.shape = tuple(read_variant(variant_dir)["input_shape"])
        predict = load_predictor(variant_dir)
        predict(np.zeros((1, *self.shape), np.float32))  # first call allocates; not on a request
        self.predict = predict


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the load engine reuses its connections
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server: _Server

    def do_GET(self) -> None:
        if self.path != "/health":
            return self._send(404, {"error": f"no route {self.path}"})
        if self.server.predict is None:
            return self._send(503, {"status": "loading"})
        self._send(200, {"status": "ready"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/predict":
            return self._send(404, {"error": f"no route {self.path}"})
        if self.server.predict is None:
            return self._send(503, {"error": "model not loaded yet"})
        try:
            inputs = np.asarray(json.loads(body)["inputs"], np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            return self._send(400, {"error": f"bad request body: {exc}"})
        if inputs.ndim == 0 or inputs.shape[1:] != self.server.shape:
            expected = list(self.server.shape)
            return self._send(422, {"error": f"expected instances of shape {expected}"})
        with self.server.lock:
            outputs = self.server.predict(inputs)
        self._send(200, {"outputs": outputs.tolist()})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a log line per request would cost more than this model's inference."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="servingbench ${kind} server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    variant_dir = Path(os.environ["SB_VARIANT_DIR"])
    try:
        server = _Server((args.host, args.port), _Handler)
    except OSError as exc:  # e.g. the port is taken: say so and exit, never hang
        sys.exit(f"${kind}: cannot listen on {args.host}:{args.port}: {exc}")
    # listen first, load second: /health answers 503 until the model can serve
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    try:
        server.load(variant_dir)
    except Exception:
        traceback.print_exc()
        sys.exit(f"${kind}: cannot load the model from {variant_dir}")
    print(f"${kind} serving {variant_dir.name} on {args.host}:{args.port}", flush=True)
    threading.Event().wait()  # until the launcher's SIGTERM


if __name__ == "__main__":
    main()
'''

TEST = '''\
"""The ${kind} adapter passes servingbench's adapter conformance suite."""

from ${module} import ${cls}Adapter
${gap}from harness.testing import AdapterConformance


class Test${cls}Conformance(AdapterConformance):
    adapter_class = ${cls}Adapter
    config = {"kind": "${kind}"}
    variants = ["eager", "onnx"]  # default: every variant it serves that builds here
    startup_timeout_s = 60.0
'''
