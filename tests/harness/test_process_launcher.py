"""The process launcher with real child processes: failures, timeouts, teardown."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import psutil
import pytest

from harness.adapter import Adapter, AdapterConfig, ProcessSpec
from harness.errors import LaunchError
from harness.launchers.base import LaunchRequest
from harness.launchers.process import ProcessConfig, ProcessLauncher
from harness.variants import BuiltVariant


class ScriptConfig(AdapterConfig):
    kind: Literal["script"] = "script"


class ScriptAdapter(Adapter[ScriptConfig]):
    """Runs a Python snippet as the 'server'; `{port}` is replaced by the http port."""

    kind: ClassVar[str] = "script"
    config_class = ScriptConfig
    variants = frozenset({"eager"})

    def __init__(self, script: str) -> None:
        super().__init__(ScriptConfig())
        self.script = textwrap.dedent(script)

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        return ProcessSpec(
            [sys.executable, "-c", self.script.replace("{port}", str(ports["http"]))]
        )


def request(tmp_path: Path, adapter: Adapter[Any], timeout_s: float = 10) -> LaunchRequest:
    return LaunchRequest(
        target="t",
        adapter=adapter,
        variant=None,  # type: ignore[arg-type]
        workdir=tmp_path / "work",
        log_path=tmp_path / "t.log",
        server_cpus=None,
        threads=1,
        startup_timeout_s=timeout_s,
    )


def test_early_exit_is_reported_with_the_log(tmp_path: Path) -> None:
    adapter = ScriptAdapter("import sys; print('boom: missing dependency'); sys.exit(3)")
    with pytest.raises(LaunchError) as info:
        ProcessLauncher(ProcessConfig()).start(request(tmp_path, adapter))
    assert "exited with code 3" in str(info.value)
    assert "boom: missing dependency" in info.value.log_tail


def test_never_ready_times_out_and_is_killed(tmp_path: Path) -> None:
    adapter = ScriptAdapter("import os, time; print(os.getpid(), flush=True); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(LaunchError, match="not ready after 1 s"):
        ProcessLauncher(ProcessConfig()).start(request(tmp_path, adapter, timeout_s=1))
    assert time.monotonic() - started < 8
    pid = int((tmp_path / "t.log").read_text().split()[0])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_teardown_kills_the_group_and_escaped_descendants(tmp_path: Path) -> None:
    # The 'server' starts a real HTTP server in a *new session* (outside our process group)
    # and a plain child; both must be gone after stop().
    adapter = ScriptAdapter("""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-m", "harness.nullserver", "--port", "{port}"],
                         start_new_session=True)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(60)
    """)
    launcher = ProcessLauncher(ProcessConfig(stop_grace_s=2))
    server = launcher.start(request(tmp_path, adapter))
    assert server.startup_s is not None and server.pid is not None
    family = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    assert len(family) == 3
    launcher.stop(server)
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, [p.cmdline() for p in alive]
    launcher.stop(server)  # idempotent
