"""The conformance checks fail when an adapter breaks the contract, not only pass when it
keeps it; and the pytest plugin's fixtures reuse the session's model."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest

from harness import conformance
from harness.adapter import Adapter, AdapterConfig, ContainerSpec, ProcessSpec
from harness.conformance import ConformanceError
from harness.scenario import VariantsSpec
from harness.variants import BuiltVariant, build_variant


class NullConfig(AdapterConfig):
    kind: Literal["null-test"] = "null-test"


class NullAdapter(Adapter[NullConfig]):
    """harness.nullserver as the 'server': answers `[[0.0]]` to everything."""

    kind: ClassVar[str] = "null-test"
    config_class = NullConfig
    variants = frozenset({"eager"})

    def __init__(self, before: str = "") -> None:
        super().__init__(NullConfig())
        self.before = before  # Python run in the server process before it serves

    def process_spec(
        self, variant: BuiltVariant, workdir: Path, host: str, ports: dict[str, int]
    ) -> ProcessSpec:
        port = ports["http"]
        code = f"{self.before}\nfrom harness.nullserver import main\nmain(['--port', '{port}'])"
        return ProcessSpec([sys.executable, "-c", code])


@pytest.fixture(scope="module")
def eager(bundle: Any) -> BuiltVariant:
    return build_variant("eager", bundle, VariantsSpec())


def test_a_clean_server_passes_and_a_wrong_one_is_caught(
    tmp_path: Path, eager: BuiltVariant, bundle: Any
) -> None:
    adapter = NullAdapter()
    launched = conformance.launch(adapter, eager, tmp_path, 20)
    try:
        conformance.check_ready(launched, 20)
        conformance.check_loopback_only(launched)
        with pytest.raises(ConformanceError, match="shape"):  # [[0.0]] is not 10 logits
            conformance.check_answers(adapter, launched.server, eager, bundle.x_test[:4], 1e-4, 0)
    finally:
        conformance.check_teardown(launched)


def test_a_leaked_shm_segment_is_caught(tmp_path: Path, eager: BuiltVariant) -> None:
    leak = Path("/dev/shm") / f"sb-conformance-test-{uuid.uuid4().hex}"
    adapter = NullAdapter(before=f"open({str(leak)!r}, 'w').write('x')")
    launched = conformance.launch(adapter, eager, tmp_path, 20)
    try:
        with pytest.raises(ConformanceError, match=leak.name):
            conformance.check_teardown(launched)
    finally:
        launched.stop()
        leak.unlink(missing_ok=True)


def test_a_taken_port_is_named(tmp_path: Path, eager: BuiltVariant) -> None:
    error = conformance.check_port_taken(NullAdapter(), eager, tmp_path, 20)
    assert "address already in use" in error.log_tail.lower()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False),
     ("::", False), ("10.1.2.3", False)],
)  # fmt: skip
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert conformance._loopback(address) is loopback


def test_container_spec_rules(tmp_path: Path) -> None:
    good = ContainerSpec("img:1", ["serve", "--port", "80"], {"http": 80}, {str(tmp_path): "/w"})
    conformance.check_container_spec(good)
    bad = [
        ContainerSpec("", ["serve"], {"http": 80}),
        ContainerSpec("img", ["serve", 80], {"http": 80}),  # type: ignore[list-item]
        ContainerSpec("img", ["serve"], {"http": "80"}),  # type: ignore[dict-item]
        ContainerSpec("img", ["serve"], {"http": 80}, {str(tmp_path / "missing"): "/w"}),
    ]
    for spec in bad:
        with pytest.raises(ConformanceError):
            conformance.check_container_spec(spec)


def test_plugin_fixtures_reuse_the_session_model(
    servingbench_bundle: Any, servingbench_variant: Any, bundle: Any
) -> None:
    assert servingbench_bundle is bundle  # tests/conftest.py's `bundle`, not a second build
    onnx = servingbench_variant("onnx")
    assert onnx.ok and onnx.outputs_test().shape == (len(bundle.x_test), 10)
    assert np.isfinite(onnx.outputs_test()).all()
