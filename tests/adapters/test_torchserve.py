"""TorchServe for real on loopback: archive, start, answers, batching, failures, teardown."""

from __future__ import annotations

import glob
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from adapters.torchserve import TorchserveAdapter, TorchserveConfig
from harness.errors import LaunchError
from harness.launchers import process as process_launcher
from harness.launchers.base import LaunchRequest
from harness.launchers.process import ProcessConfig, ProcessLauncher
from harness.scenario import VariantsSpec
from harness.variants import build_variant

available = TorchserveAdapter.availability()
pytestmark = [
    pytest.mark.skipif(not available.available, reason=f"TorchServe: {available.reason}"),
    pytest.mark.usefixtures("no_orphans"),
]


def launch(tmp_path: Path, variant, **config: object):
    adapter = TorchserveAdapter(TorchserveConfig(kind="torchserve", **config))  # type: ignore[arg-type]
    launcher = ProcessLauncher(ProcessConfig(stop_grace_s=5))
    request = LaunchRequest(
        "ts", adapter, variant, tmp_path / "work", tmp_path / "ts.log", None, 1, 120
    )
    return adapter, launcher, launcher.start(request)


@pytest.mark.parametrize("name", ["torchscript", "onnx"])
def test_serves_the_reference_and_batches(tmp_path: Path, bundle, name: str) -> None:
    variant = build_variant(name, bundle, VariantsSpec())
    adapter, launcher, server = launch(tmp_path, variant, batch_size=8, max_batch_delay_ms=20)
    worker_port = server.ports["worker"]
    private_tmp = adapter._tmp[tmp_path / "work"]
    assert (private_tmp / ".model_server.pid").exists()
    try:
        assert (tmp_path / "work" / "model-store" / "model.mar").exists()
        expected = variant.outputs_test()[:8]
        np.testing.assert_allclose(
            adapter.client(server).infer(bundle.x_test[:8]), expected, atol=1e-4
        )
        before = adapter.server_metrics(server)
        client = adapter.client(server)

        def one(i: int) -> int:
            body = client.encode(bundle.x_test[i : i + 1])
            answer = httpx.post(
                client.base_url + client.path,
                content=body,
                timeout=30,
                headers={"Content-Type": "application/json"},
            ).json()
            np.testing.assert_allclose(answer["outputs"][0], variant.outputs_test()[i], atol=1e-4)
            return int(answer["batch_size"])

        with ThreadPoolExecutor(16) as pool:
            sizes = list(pool.map(one, range(64)))
        after = adapter.server_metrics(server)
    finally:
        launcher.stop(server)
    assert max(sizes) > 1, sizes  # the handler really received batches
    breakdown = adapter.breakdown(before, after, 64)
    assert breakdown["server_queue_ms"] > 0 and breakdown["server_compute_ms"] > 0
    assert not private_tmp.exists()  # worker sockets, pid file, unpacked model
    assert not glob.glob(f"/tmp/.ts.sock.{worker_port}*")


def test_port_taken_fails_fast_with_the_cause(tmp_path: Path, bundle, monkeypatch) -> None:
    variant = build_variant("eager", bundle, VariantsSpec())
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real = process_launcher.free_port
    # the first port the launcher picks (inference) is one somebody else holds
    monkeypatch.setattr(process_launcher, "free_port", lambda: next(ports, None) or real())
    started = time.monotonic()
    try:
        with pytest.raises(LaunchError) as info:
            launch(tmp_path, variant)
    finally:
        squatter.close()
    assert time.monotonic() - started < 60
    text = str(info.value)
    assert "Failed to bind" in text or "Address already in use" in text or "exited" in text
    assert "Address already in use" in info.value.log_tail or "bind" in info.value.log_tail


def test_crashed_server_is_still_torn_down(tmp_path: Path, bundle) -> None:
    variant = build_variant("eager", bundle, VariantsSpec())
    _adapter, launcher, server = launch(tmp_path, variant, workers=2)
    family = psutil.Process(server.pid).children(recursive=True)
    java = [p for p in family if "java" in p.name()]
    assert java and len([p for p in family if "model_service_worker" in " ".join(p.cmdline())]) == 2
    os.kill(java[0].pid, signal.SIGKILL)  # the frontend dies under us
    time.sleep(1)
    launcher.stop(server)
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_container_spec_leaves_nothing_on_the_host(tmp_path: Path, bundle) -> None:
    variant = build_variant("eager", bundle, VariantsSpec())
    adapter = TorchserveAdapter(TorchserveConfig(kind="torchserve"))
    before = set(glob.glob("/tmp/sb-ts-*"))
    spec = adapter.container_spec(variant, tmp_path)
    assert spec.image.startswith("pytorch/torchserve:") and spec.ports["http"] == 8080
    assert (
        "java.io.tmpdir=/tmp/servingbench" in (tmp_path / "config.container.properties").read_text()
    )
    assert set(glob.glob("/tmp/sb-ts-*")) == before  # no private temp folder made for it
