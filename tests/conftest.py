"""Shared fixtures: a private build cache, real null servers on loopback, orphan checks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from harness.cache import cache_root
from harness.net import free_port

REPO = Path(__file__).resolve().parent.parent


# Adapter environments (pip installs of minutes) outlive the throw-away build cache below:
# they stay where the user's own runs keep them unless SERVINGBENCH_ENVS says otherwise.
os.environ.setdefault("SERVINGBENCH_ENVS", str(cache_root() / "envs"))


@pytest.fixture(scope="session", autouse=True)
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session builds the model and variants once, from scratch, in a temp cache."""
    path = tmp_path_factory.mktemp("sbcache")
    old = os.environ.get("SERVINGBENCH_CACHE")
    os.environ["SERVINGBENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SERVINGBENCH_CACHE", None)
    else:
        os.environ["SERVINGBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def bundle(build_cache: Path):
    from harness.models import build_model
    from harness.models.digits_cnn import DigitsCnnConfig

    return build_model(DigitsCnnConfig(name="digits-cnn"))


def wait_http(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(url)


@contextlib.contextmanager
def running(
    argv: list[str],
    health_url: str,
    cpus: list[int] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own session, wait for health, always kill its group."""
    proc = subprocess.Popen(
        argv, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        wait_http(health_url)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def nullserver() -> Callable[..., contextlib.AbstractContextManager[int]]:
    """`with nullserver(delay_ms=5) as port:` a real HTTP server on 127.0.0.1."""

    @contextlib.contextmanager
    def start(**options: object) -> Iterator[int]:
        port = free_port()
        argv = [sys.executable, "-m", "harness.nullserver", "--port", str(port)]
        for key, value in options.items():
            flag = f"--{key.replace('_', '-')}"
            argv += [flag] if value is True else [flag, str(value)]
        with running(argv, f"http://127.0.0.1:{port}/health", cpus=_server_cpus()):
            yield port

    return start


def _server_cpus() -> list[int] | None:
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:1] if len(cpus) > 1 else None


def client_cpus() -> list[int] | None:
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[1:2] if len(cpus) > 1 else None


# Every process this test session starts inherits this tag, even after it is orphaned.
SESSION_TAG = f"{os.getpid()}-{time.time_ns()}"
os.environ["SERVINGBENCH_TEST_SESSION"] = SESSION_TAG


def _helper(proc: psutil.Process) -> bool:
    # multiprocessing's resource tracker lives as long as pytest itself: not a server
    # and the load processes it spawns are ours, closed by their context managers
    cmd = " ".join(proc.cmdline())
    return "multiprocessing.resource_tracker" in cmd or "multiprocessing.spawn" in cmd


def servingbench_processes() -> list[psutil.Process]:
    """Live processes started (directly or not) by this test session, except pytest itself."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if (
                proc.environ().get("SERVINGBENCH_TEST_SESSION") == SESSION_TAG
                and (proc.status() != psutil.STATUS_ZOMBIE)
                and not _helper(proc)
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def no_orphans() -> Iterator[None]:
    """Fail the test if it leaves a server process behind."""
    before = {p.pid for p in servingbench_processes()}
    yield
    deadline = time.monotonic() + 5
    while True:
        left = [p for p in servingbench_processes() if p.pid not in before]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, f"orphaned processes: {[' '.join(p.cmdline()) for p in left]}"
