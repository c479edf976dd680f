"""tiny-llama, its GGUF variants, the LLM workload and the scenario rules around them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.llm.gguf_export import permute_rope
from harness.llm.variants import build_llm_variant, checks, gguf_file, hf_dir
from harness.llm.workload import (
    FixedLength,
    NormalLength,
    UniformLength,
    WorkloadSpec,
    make_requests,
)
from harness.models import build_model
from harness.models.tiny_llama import TinyLlamaConfig
from harness.scenario import VariantsSpec, parse_scenario


@pytest.fixture(scope="module")
def llm(build_cache: Path):
    return build_model(TinyLlamaConfig(name="tiny-llama"))


def test_model_is_a_few_million_parameters_and_deterministic(llm, tmp_path, monkeypatch) -> None:
    assert 2e6 < llm.meta["parameters"] < 2e7
    assert (llm.hf_dir / "config.json").exists() and (llm.hf_dir / "tokenizer.json").exists()
    monkeypatch.setenv("SERVINGBENCH_CACHE", str(tmp_path))  # a second build, elsewhere
    again = build_model(TinyLlamaConfig(name="tiny-llama"))
    assert again.path != llm.path
    assert again.meta["weights_sha256"] == llm.meta["weights_sha256"]
    assert again.meta["tokenizer_sha256"] == llm.meta["tokenizer_sha256"]


def test_tokenizer_round_trips_text(llm) -> None:
    tok = llm.tokenizer()
    text = "The server streams 42 tokens, fast!"
    assert tok.decode(tok.encode(text).ids) == text


def test_gguf_holds_the_model_for_llama_cpp(llm) -> None:
    import gguf

    variant = build_llm_variant("q8_0", llm, VariantsSpec())
    reader = gguf.GGUFReader(str(gguf_file(variant)))
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.3.ffn_down.weight"} <= names
    assert len(names) == 3 + 9 * 4
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    assert hf_dir(variant) is None  # q8_0 is llama.cpp's format only
    assert hf_dir(build_llm_variant("bf16", llm, VariantsSpec())) is not None


def test_rope_permutation_is_a_row_shuffle() -> None:
    w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    p = permute_rope(w, heads=2)
    assert sorted(map(tuple, p.tolist())) == sorted(map(tuple, w.tolist()))
    # head 0 rows [0 1 2 3] -> interleaved halves [0 2 1 3]
    assert p[:4, 0].tolist() == [0.0, 6.0, 3.0, 9.0]


@pytest.mark.parametrize("name", ["f32", "f16", "bf16", "q8_0", "int8"])
def test_variants_are_validated_against_the_f32_reference(llm, name: str) -> None:
    variant = build_llm_variant(name, llm, VariantsSpec())
    v = variant.validation
    assert variant.ok, v
    if name == "f32":
        assert v.max_abs_diff == 0.0 and v.agreement == 1.0
    else:  # int8 quantizes activations too (measured: 0.0995, agreement 30 of 32)
        assert 0 < v.max_abs_diff < (0.3 if name == "int8" else 0.1) and v.agreement >= 0.9
    rows = checks(variant)
    assert len(rows) == 32 and all(len(r["prompt_ids"]) == 24 for r in rows)


def test_the_int8_variant_is_the_f32_folder_quantized_at_load(llm) -> None:
    """int8 has no GGUF (llama.cpp has q8_0): its folder asks the transformers engine to
    quantize every Linear dynamically, and its checks come from that very model."""
    import json

    from harness.llm import serving
    from harness.llm.variants import gguf_file

    variant = build_llm_variant("int8", llm, VariantsSpec())
    assert gguf_file(variant) is None and variant.artifact == "hf/model.safetensors"
    config = json.loads((variant.path / "hf" / "config.json").read_text())
    assert config[serving.QUANTIZATION_KEY] == serving.DYNAMIC_INT8
    assert config["torch_dtype"] == "float32"
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()  # not the process's default one

    def metric(kind: str, name: str, doc: str) -> object:
        made = prometheus_client.Counter if kind == "counter" else prometheus_client.Gauge
        return made(name, doc, registry=registry)

    engine = serving.Engine.load(variant.path, threads=1, counters=serving.Counters(metric))
    linear = engine.model.model.layers[0].self_attn.q_proj
    assert "quantized.dynamic" in type(linear).__module__
    with pytest.raises(ValueError, match="servingbench_quantization"):
        serving.quantize(engine.model, "int4")


def test_a_strict_gate_fails_a_quantized_build(llm) -> None:
    variant = build_llm_variant("q8_0", llm, VariantsSpec(llm_min_agreement=1.0))
    if variant.validation.agreement < 1.0:
        assert not variant.ok and "llm_min_agreement" in variant.validation.reason


def test_workload_lengths_are_exact_tokens(llm) -> None:
    tok = llm.tokenizer()
    spec = WorkloadSpec(
        prompt_tokens=UniformLength(kind="uniform", min=10, max=20),
        output_tokens=NormalLength(kind="normal", mean=30, std=10, min=5, max=40),
        shared_prefix_tokens=7,
        samples=50,
    )
    requests = make_requests(spec, tok, seed=3, context=2048)
    assert len(requests) == 50
    assert all(17 <= r.prompt_len <= 27 for r in requests)  # type: ignore[operator]
    assert all(5 <= r.max_tokens <= 40 for r in requests)
    prefixes = {r.prompt_ids[:7] for r in requests}  # type: ignore[index]
    assert len(prefixes) == 1
    assert make_requests(spec, tok, seed=3, context=2048) == requests  # seeded


def test_workload_that_overflows_the_context_is_refused(llm) -> None:
    spec = WorkloadSpec(output_tokens=FixedLength(kind="fixed", value=2000))
    with pytest.raises(ValueError, match="over the model's context of 2048"):
        make_requests(spec, llm.tokenizer(), seed=0, context=2048)


LLM_SCENARIO = """\
name: llm
model: {name: tiny-llama}
load: {profile: {kind: closed, concurrency: 1}%s}
targets:
  - {name: a, adapter: {kind: llamacpp}, variant: %s}
"""


def test_scenario_rules_for_llm_models() -> None:
    assert parse_scenario(LLM_SCENARIO % ("", "q8_0")).workload is None
    with pytest.raises(ConfigError, match="variant 'onnx' is not a build of tiny-llama"):
        parse_scenario(LLM_SCENARIO % ("", "onnx"))
    with pytest.raises(ConfigError, match="locust cannot stream"):
        parse_scenario(LLM_SCENARIO % (", backend: locust", "f32"))
    with pytest.raises(ConfigError, match="slots"):
        parse_scenario(
            LLM_SCENARIO.replace("kind: llamacpp", "kind: llamacpp, slots: 0") % ("", "f32")
        )


def test_given_model_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Hugging Face model folder"):
        build_model(TinyLlamaConfig(name="tiny-llama", path=str(tmp_path / "nothing")))


def test_vllm_launch_specs_process_and_gpu_container(llm, tmp_path: Path) -> None:
    from adapters.vllm import VllmAdapter, VllmConfig
    from harness.environments import PYTHON
    from harness.errors import UnavailableError

    variant = build_llm_variant("bf16", llm, VariantsSpec())
    adapter = VllmAdapter(
        VllmConfig(
            kind="vllm", gpu_memory_utilization=0.8, tensor_parallel_size=2, max_model_len=2048
        )
    )
    proc = adapter.process_spec(variant, tmp_path, "127.0.0.1", {"http": 8123})
    assert proc.argv[:3] == [PYTHON, "-m", "vllm.entrypoints.openai.api_server"]
    assert proc.argv[proc.argv.index("--dtype") + 1] == "bfloat16"
    assert proc.argv[proc.argv.index("--host") + 1] == "127.0.0.1"
    assert proc.env["HF_HUB_OFFLINE"] == "1" and proc.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    box = adapter.container_spec(variant, tmp_path, gpus=True)
    assert box.image.startswith("vllm/vllm-openai") and box.gpus
    args = box.command
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.8"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--max-model-len") + 1] == "2048"
    assert box.mounts == {str(hf_dir(variant)): "/model"} and "/model" in box.read_only
    cpu_box = adapter.container_spec(variant, tmp_path, gpus=False)
    assert "--gpu-memory-utilization" not in cpu_box.command
    with pytest.raises(UnavailableError, match="no Hugging Face folder"):
        adapter.process_spec(
            build_llm_variant("q8_0", llm, VariantsSpec()), tmp_path, "127.0.0.1", {"http": 1}
        )


def test_llamacpp_container_spec_and_a_given_hf_folder(llm, tmp_path: Path) -> None:
    from adapters.llamacpp import LlamaCppAdapter, LlamaCppConfig
    from harness.errors import UnavailableError

    adapter = LlamaCppAdapter(LlamaCppConfig(kind="llamacpp", slots=3, gpu_layers=99))
    variant = build_llm_variant("q8_0", llm, VariantsSpec())
    box = adapter.container_spec(variant, tmp_path, gpus=True)
    assert box.image.endswith(":server-cuda") and box.ports == {"http": 8080}
    assert box.command[box.command.index("-np") + 1] == "3"
    assert box.command[box.command.index("-ngl") + 1] == "99"
    assert box.command[box.command.index("-m") + 1] == "/model/model.gguf"
    # a user's Hugging Face folder: vLLM serves it, llama.cpp needs a GGUF and says so
    given = build_model(TinyLlamaConfig(name="tiny-llama", path=str(llm.hf_dir)))
    assert given.hf_dir == llm.hf_dir and given.gguf_file is None and given.config is None
    mine = build_llm_variant("bf16", given, VariantsSpec())
    assert hf_dir(mine) == llm.hf_dir and gguf_file(mine) is None
    assert mine.ok and "served as given" in mine.validation.reason
    with pytest.raises(UnavailableError, match="no GGUF file"):
        adapter.process_spec(mine, tmp_path, "127.0.0.1", {"http": 1})
