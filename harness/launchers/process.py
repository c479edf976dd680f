"""Run a server as a local subprocess: own session, free loopback ports, logs to the run folder.

Every server is started under a small supervisor (harness/launchers/supervisor.py) that
the kernel signals when servingbench dies, by any means, and that adopts the server's
orphaned descendants: no server outlives the harness, not even after a kill -9. The
supervisor pins the server to the scenario's server CPUs before it starts.

Readiness is polled (with sleeps, never a busy loop) until the adapter's probe succeeds,
while watching for an early exit; a server that dies or never becomes ready raises
LaunchError with the tail of its log. While it serves, `check()` says whether it is still
alive. Teardown signals the supervisor (which TERMs the server's group and every
descendant, then KILLs what is left after a grace period), and kills anything left after
that itself, including on errors and Ctrl-C (an atexit hook catches the rest).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import psutil
from pydantic import PositiveFloat

from harness import environments
from harness.adapter import Server
from harness.errors import LaunchError
from harness.launchers.base import Launcher, LauncherConfig, LaunchRequest, fill, fill_env, tail
from harness.net import LOOPBACK, free_port

_live: dict[int, subprocess.Popen[bytes]] = {}  # server pid -> its supervisor
SUPERVISOR = Path(__file__).with_name("supervisor.py")


class ProcessConfig(LauncherConfig):
    kind: Literal["process"] = "process"
    stop_grace_s: PositiveFloat = 10.0


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
            return Server(
                base_url=None,
                variant=request.variant,
                startup_s=0.0,
                info={"threads": request.threads},
            )
        own_env = adapter.own_environment()
        if own_env is not None:  # a run creates it beforehand; a bare launch here, once
            environments.ensure(own_env)
        env = {
            **os.environ,
            **_thread_env(request.threads),
            **environments.server_env(own_env),
            **fill_env(spec.env, request),
            "PYTHONUNBUFFERED": "1",
        }
        started = time.perf_counter()
        argv = fill(environments.resolve_argv(spec.argv, own_env), request)
        argv = supervised(argv, request.server_cpus, self.config.stop_grace_s)
        with open(request.log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=spec.cwd or os.getcwd(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid = _server_pid(proc)
        _live[pid] = proc
        self._cleanups[pid] = lambda: adapter.cleanup(request.workdir)
        server = Server(
            base_url=adapter.base_url(LOOPBACK, ports),
            ports=ports,
            variant=request.variant,
            pid=pid,
            log_path=request.log_path,
            info={"threads": request.threads, "supervisor_pid": proc.pid},
        )
        try:
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

    def check(self, server: Server) -> str | None:
        proc = _live.get(server.pid or -1)
        if proc is None:
            return None
        code = proc.poll()
        return None if code is None else f"server exited with code {code}"

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


def supervised(argv: list[str], cpus: list[int] | None, grace_s: float) -> list[str]:
    """`argv` run under the supervisor, owned by this process (see the module doc)."""
    pinned = ["--cpus", ",".join(map(str, cpus))] if cpus else []
    return [sys.executable, "-I", str(SUPERVISOR), "--owner", str(os.getpid()),
            "--grace", f"{grace_s:g}", *pinned, "--", *argv]  # fmt: skip


def _server_pid(proc: subprocess.Popen[bytes], wait_s: float = 5.0) -> int:
    """The server the supervisor started (its first child); the supervisor's own pid when
    it has exited already (the readiness wait then reports the exit code)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(proc.pid).children()
            if children:
                return int(children[0].pid)
        time.sleep(0.005)
    return proc.pid


def _thread_env(threads: int) -> dict[str, str]:
    value = str(threads)
    return {"SERVINGBENCH_THREADS": value, "OMP_NUM_THREADS": value, "MKL_NUM_THREADS": value}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """TERM the supervisor (it ends the server's group and every descendant), wait, then
    KILL whatever is left (group and strays) ourselves."""
    family = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s + 5)  # the supervisor's own TERM, grace and KILL sequence
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
