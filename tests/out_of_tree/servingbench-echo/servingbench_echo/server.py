"""The echo server: plain JSON over the standard library's ThreadingHTTPServer."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from harness.runtime import load_predictor, read_variant


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    predict: Any = None  # set once the model is loaded: /health answers 200 from then on
    shape: tuple[int, ...] = ()
    lock = threading.Lock()
    faults: dict[str, Any] = {}  # the faulty adapter's (ECHO_FAULTS), none for echo
    served = 0
    busy = 0  # requests being handled right now
    crowded = 0  # requests that arrived while another one was being handled
    started = 0.0

    def fault(self) -> tuple[int, bytes] | None:
        """What this request gets instead of its answer, if a fault says so."""
        f = self.faults
        with self.lock:
            self.served += 1
            n = self.served
            crowded = self.busy > 1
            self.crowded += crowded
            nth_crowded = self.crowded
        if f.get("die_after") and n >= f["die_after"]:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no cleanup, no answer
        if f.get("fail_with") is not None:
            return 500, json.dumps({"error": f["fail_with"]}).encode()
        if f.get("shed_every") and crowded and nth_crowded % f["shed_every"] == 0:
            return 503, b'{"error":"overloaded, try later"}'
        if f.get("garbage_after") and n > f["garbage_after"]:
            return 200, b"<html><body>Service temporarily replaced</body></html>"
        every = f.get("stall_every_s") or 0.0
        if every > 0:
            phase = (time.monotonic() - self.started) % every
            if phase < f.get("stall_s", 0.0):
                time.sleep(f["stall_s"] - phase)  # held, like an event loop stall
        return None

    def load(self, variant_dir: Path) -> None:
        self.shape = tuple(read_variant(variant_dir)["input_shape"])
        predict = load_predictor(variant_dir)
        predict(np.zeros((1, *self.shape), np.float32))
        self.predict = predict


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load engine expects
    disable_nagle_algorithm = True
    server: EchoServer

    def do_GET(self) -> None:
        if self.path != "/health":
            return self._send(404, {"error": "not found"})
        ready = self.server.predict is not None
        self._send(200 if ready else 503, {"status": "ready" if ready else "loading"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/predict":
            return self._send(404, {"error": "not found"})
        if self.server.predict is None:
            return self._send(503, {"error": "loading"})
        try:
            inputs = np.asarray(json.loads(body)["inputs"], np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            return self._send(400, {"error": f"bad request body: {exc}"})
        if inputs.ndim == 0 or inputs.shape[1:] != self.server.shape:
            return self._send(422, {"error": f"expected shape {list(self.server.shape)}"})
        with self.server.lock:
            self.server.busy += 1
        try:
            instead = self.server.fault() if self.server.faults else None
            if instead is not None:
                return self._raw(*instead)
            with self.server.lock:
                outputs = self.server.predict(inputs)
        finally:
            with self.server.lock:
                self.server.busy -= 1
        self._send(200, {"outputs": outputs.tolist()})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        self._raw(status, json.dumps(payload, separators=(",", ":")).encode())

    def _raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """No line per request."""


def main() -> None:
    parser = argparse.ArgumentParser(description="servingbench-echo server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    variant_dir = Path(os.environ["ECHO_VARIANT_DIR"])
    try:
        server = EchoServer((args.host, args.port), Handler)
        server.faults = json.loads(os.environ.get("ECHO_FAULTS") or "{}")
        server.started = time.monotonic()
    except OSError as exc:
        sys.exit(f"echo: cannot listen on {args.host}:{args.port}: {exc}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        server.load(variant_dir)
    except Exception:
        traceback.print_exc()
        sys.exit(f"echo: cannot load the model from {variant_dir}")
    threading.Event().wait()


if __name__ == "__main__":
    main()
