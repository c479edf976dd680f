"""An endpoint that is already running (anywhere): nothing to start or stop, only probe."""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import AnyHttpUrl

from harness.adapter import Server
from harness.errors import LaunchError
from harness.launchers.base import Launcher, LauncherConfig, LaunchRequest


class ExternalConfig(LauncherConfig):
    kind: Literal["external"]
    url: AnyHttpUrl


class ExternalLauncher(Launcher):
    kind: ClassVar[str] = "external"
    config_class = ExternalConfig
    description = "an already-running endpoint given by URL"
    config: ExternalConfig

    def start(self, request: LaunchRequest) -> Server:
        base_url = str(self.config.url).rstrip("/")
        started = time.perf_counter()
        deadline = time.monotonic() + request.startup_timeout_s
        request.log_path.write_text(f"external endpoint {base_url}: not started by servingbench\n")
        server = Server(base_url=base_url, variant=request.variant, info={"external": True})
        while not request.adapter.probe(server):
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{request.target}: {base_url} not ready after {request.startup_timeout_s:g} s"
                )
            time.sleep(0.2)
        server.startup_s = time.perf_counter() - started
        return server

    def stop(self, server: Server) -> None:
        """Not ours to stop."""
