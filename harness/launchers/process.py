"""Run a server as a local subprocess: own session, free loopback ports, logs to the run folder.

Readiness is polled (with sleeps, never a busy loop) until the adapter's probe succeeds,
while watching for an early exit; a server that dies or never becomes ready raises
LaunchError with the tail of its log. Teardown signals the whole process group (TERM, a
grace period, then KILL) and also any descendant that left the group, so no server
process outlives the run, including on errors and Ctrl-C (an atexit hook catches the rest).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import ClassVar, Literal

import psutil
from pydantic import PositiveFloat

from harness import environments
from harness.adapter import Server
from harness.errors import LaunchError
from harness.launchers.base import Launcher, LauncherConfig, LaunchRequest

LOOPBACK = "127.0.0.1"
_live: dict[int, subprocess.Popen[bytes]] = {}


class ProcessConfig(LauncherConfig):
    kind: Literal["process"] = "process"
    stop_grace_s: PositiveFloat = 10.0


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: os.PathLike[str] | str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ProcessLauncher(Launcher):
    kind: ClassVar[str] = "process"
    config_class = ProcessConfig
    description = "local subprocess in its own session on free loopback ports"
    config: ProcessConfig

    def __init__(self, config: ProcessConfig) -> None:
        super().__init__(config)
        self._cleanups: dict[int, Callable[[], None]] = {}

    def start(self, request: LaunchRequest) -> Server:
        adapter = request.adapter
        ports = {name: free_port() for name in adapter.ports}
        request.workdir.mkdir(parents=True, exist_ok=True)
        adapter.prepare(request.variant, request.workdir)
        spec = adapter.process_spec(request.variant, request.workdir, LOOPBACK, ports)
        if spec is None:  # nothing to launch: the load engine calls the model itself
            return Server(base_url=None, startup_s=0.0, info={"threads": request.threads})
        own_env = adapter.environment
        if own_env is not None:
            environments.ensure(own_env)
        env = {
            **os.environ,
            **_thread_env(request.threads),
            **environments.server_env(own_env),
            **spec.env,
            "PYTHONUNBUFFERED": "1",
        }
        started = time.perf_counter()
        with open(request.log_path, "ab") as log:
            proc = subprocess.Popen(
                environments.resolve_argv(spec.argv, own_env),
                cwd=spec.cwd or os.getcwd(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _live[proc.pid] = proc
        self._cleanups[proc.pid] = lambda: adapter.cleanup(request.workdir)
        server = Server(
            base_url=adapter.base_url(LOOPBACK, ports),
            ports=ports,
            pid=proc.pid,
            log_path=request.log_path,
            info={"threads": request.threads},
        )
        try:
            if request.server_cpus:
                os.sched_setaffinity(proc.pid, request.server_cpus)
            self._wait_ready(proc, server, request)
        except BaseException:
            self.stop(server)
            raise
        server.startup_s = time.perf_counter() - started
        return server

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], server: Server, request: LaunchRequest
    ) -> None:
        deadline = time.monotonic() + request.startup_timeout_s
        pause = 0.05
        while True:
            code = proc.poll()
            if code is not None:
                raise LaunchError(
                    f"{request.target}: server exited with code {code} before becoming ready "
                    f"(log: {request.log_path})",
                    tail(request.log_path),
                )
            if request.adapter.probe(server):
                return
            fatal = _fatal_line(request.log_path, request.adapter.fatal_log_patterns)
            if fatal:
                raise LaunchError(
                    f"{request.target}: server failed while starting: {fatal} "
                    f"(log: {request.log_path})",
                    tail(request.log_path),
                )
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{request.target}: not ready after {request.startup_timeout_s:g} s "
                    f"(log: {request.log_path})",
                    tail(request.log_path),
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def stop(self, server: Server) -> None:
        if server.pid is None:
            return
        proc = _live.pop(server.pid, None)
        if proc is None:
            return
        _terminate(proc, self.config.stop_grace_s)
        cleanup = self._cleanups.pop(server.pid, None)
        if cleanup is not None:
            cleanup()


def _fatal_line(log_path: os.PathLike[str] | str, patterns: tuple[str, ...]) -> str | None:
    """The first log line matching a pattern the adapter says means 'will never be ready'."""
    if not patterns:
        return None
    for line in tail(log_path, 200).splitlines():
        if any(p in line for p in patterns):
            return line.strip()[:300]
    return None


def _thread_env(threads: int) -> dict[str, str]:
    value = str(threads)
    return {"SERVINGBENCH_THREADS": value, "OMP_NUM_THREADS": value, "MKL_NUM_THREADS": value}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """TERM the process group, wait, KILL what is left (group and strays)."""
    family = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in family:  # a descendant that started its own session escaped the group
        with contextlib.suppress(psutil.Error):
            child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    psutil.wait_procs(family, timeout=5)


@atexit.register
def _stop_all() -> None:
    for pid in list(_live):
        _terminate(_live.pop(pid), 2.0)
