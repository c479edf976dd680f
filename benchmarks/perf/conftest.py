"""Shared pieces of the harness's own performance suite (pytest-benchmark).

    nox -s perf        # saves each run under results/perf-benchmarks, compares with the last

A null server for the load engine, synthetic records, a large synthetic run folder (written
once per session), and a figure board: counts that are not timings (requests/s, client
CPU per request) are put on it and printed at the end, as well as saved in `extra_info`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.perf.synthetic import step_records, write_run
from harness.load.records import StepRecords
from harness.net import free_port

FIGURES: dict[str, str] = {}


@pytest.fixture
def figures() -> dict[str, str]:
    """`figures["engine closed c=8"] = "12,345 req/s"`: printed in the terminal summary."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("servingbench perf figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name:<44} {value}")


def cpus() -> tuple[list[int] | None, list[int] | None]:
    """(server, client) CPU sets: one core each where there are two, as in a real run."""
    available = sorted(os.sched_getaffinity(0))
    return (available[:1], available[1:2]) if len(available) > 1 else (None, None)


@contextlib.contextmanager
def pinned(cpuset: list[int] | None) -> Iterator[None]:
    """Run this process on `cpuset` for a while (the load generator's own core)."""
    before = os.sched_getaffinity(0)
    if cpuset:
        os.sched_setaffinity(0, cpuset)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture(scope="session")
def null_port() -> Iterator[int]:
    """harness.nullserver on 127.0.0.1, answering 10 logits, on its own core; always killed."""
    port = free_port()
    outputs = "[[" + ",".join(["0.5"] * 10) + "]]"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.nullserver", "--port", str(port), "--outputs", outputs],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server_cpus, _ = cpus()
        if server_cpus:
            os.sched_setaffinity(proc.pid, server_cpus)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"null server on port {port} did not start")
            time.sleep(0.05)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="session")
def records_100k() -> StepRecords:
    """A 10 s step at 10k req/s (100k requests), 1 s warm-up, a few errors."""
    return step_records(100_000, rate=10_000.0, median_ms=2.0, seed=1, warmup_s=1.0)


@pytest.fixture(scope="session")
def large_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 targets x 10 load levels x 100k requests, written once with RunFolder."""
    started = time.perf_counter()
    path = write_run(tmp_path_factory.mktemp("perf-run"), targets=10, levels=10, per_step=100_000)
    FIGURES["synthetic run written (10x10x100k)"] = f"{time.perf_counter() - started:.1f} s"
    return path


@pytest.fixture(scope="session")
def instances() -> np.ndarray:
    """256 digits-shaped instances (1x8x8 float32), as a scenario's dataset would give."""
    return np.random.default_rng(0).random((256, 1, 8, 8), dtype=np.float32)
