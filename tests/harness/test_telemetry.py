"""Telemetry samplers against real processes; the GPU sampler where there is no GPU."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.telemetry import GpuSampler, ProcessTreeSampler, gpu_inventory
from harness.telemetry.gpu import _energy_j


def test_process_tree_sampler_sees_children_cpu_and_memory() -> None:
    # a parent that sleeps and a child that spins: the tree's CPU is the child's ~100%
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'x = bytearray(50_000_000)\\nwhile True: pass']); time.sleep(30)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        time.sleep(0.5)
        sampler = ProcessTreeSampler(proc.pid, interval_s=0.05)
        sampler.start()
        time.sleep(1.0)
        frame = sampler.stop()
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    summary = sampler.summary(frame, requests=0, duration_s=1.0)
    assert len(frame) >= 10 and (frame.processes == 2).all()
    assert 60 < summary["server_cpu_pct"] < 130
    assert summary["server_rss_mb"] > 50


@pytest.mark.skipif(bool(gpu_inventory()[0]), reason="this machine has a GPU")
def test_no_gpu_is_reported_once_and_samples_nothing() -> None:
    gpus, reason = gpu_inventory()
    assert gpus == [] and reason
    sampler = GpuSampler()
    assert not sampler.available and sampler.reason == reason
    sampler.start()
    assert sampler.stop().empty


def test_energy_from_counter_or_power_after_a_reset() -> None:
    steady = pd.DataFrame({"t_s": [0.0, 1.0, 2.0], "power_w": [100.0] * 3,
                           "energy_mj": [5_000.0, 105_000.0, 205_000.0]})  # fmt: skip
    assert _energy_j(steady) == pytest.approx(200.0)
    reset = steady.assign(energy_mj=[5_000.0, 105_000.0, 1_000.0])  # counter went backwards
    assert _energy_j(reset) == pytest.approx(200.0)  # integrated from power instead
