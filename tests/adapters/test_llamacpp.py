"""llama.cpp's llama-server for real on loopback: every GGUF precision of tiny-llama, greedy
answers against the numpy reference, token accounting against the server's own usage and
counters, streaming under load, parallel slots, chat, a user's own GGUF, teardown.

`nox -s tests` builds llama-server first (cached per machine) and sets
SERVINGBENCH_REQUIRE_LLAMACPP=1, so there a missing build fails instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from adapters import _llamacpp_build
from adapters.llamacpp import LlamaCppAdapter, LlamaCppConfig
from harness.launchers.base import LaunchRequest
from harness.launchers.process import ProcessConfig, ProcessLauncher
from harness.llm.fidelity import check_generation
from harness.llm.metrics import llm_summary
from harness.llm.variants import build_llm_variant, checks
from harness.llm.workload import FixedLength, UniformLength, WorkloadSpec, make_requests
from harness.load.plan import StepPlan
from harness.load.worker import LoadProcess
from harness.models import build_model
from harness.models.tiny_llama import TinyLlamaConfig
from harness.scenario import VariantsSpec
from tests.conftest import client_cpus

if not _llamacpp_build.is_built() and os.environ.get("SERVINGBENCH_REQUIRE_LLAMACPP") == "1":
    raise RuntimeError("llama-server is not built: run `python -m adapters._llamacpp_build`")
pytestmark = [
    pytest.mark.skipif(
        not _llamacpp_build.is_built(),
        reason="llama-server not built here: `python -m adapters._llamacpp_build` "
        "(~10 min on 2 cores; `nox -s tests` runs it first)",
    ),
    pytest.mark.usefixtures("no_orphans"),
]


@pytest.fixture(scope="module")
def llm(build_cache: Path):
    return build_model(TinyLlamaConfig(name="tiny-llama"))


@pytest.fixture(scope="module")
def load():
    with LoadProcess(client_cpus()) as proc:
        yield proc


def launch(tmp_path: Path, variant, prompt_cache: bool = False, **config: object):
    adapter = LlamaCppAdapter(LlamaCppConfig(kind="llamacpp", **config))  # type: ignore[arg-type]
    adapter.use({"prompt_cache": prompt_cache})  # what the generate workload tells it
    launcher = ProcessLauncher(ProcessConfig(stop_grace_s=5))
    request = LaunchRequest(
        "llama", adapter, variant, tmp_path / "work", tmp_path / "llama.log", None, 1, 60
    )
    return adapter, launcher, launcher.start(request)


def workload(llm, **spec: object):
    return make_requests(WorkloadSpec(**spec), llm.tokenizer(), seed=0, context=2048)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["f32", "f16", "bf16", "q8_0"])
def test_every_precision_answers_like_its_reference(tmp_path: Path, llm, name: str) -> None:
    variant = build_llm_variant(name, llm, VariantsSpec())
    assert variant.ok, variant.validation
    adapter, launcher, server = launch(tmp_path, variant, slots=2)
    try:
        assert server.startup_s is not None and server.startup_s < 30
        result = check_generation(
            adapter.client(server),
            checks(variant),
            workload(llm),
            samples=32,
            min_agreement=0.8,
        )
        assert result.passed, result.message
        assert result.samples >= 10  # enough prompts had a clear greedy winner
        # f32 computes what numpy computes: every clear-cut greedy token agrees
        if name == "f32":
            assert result.agreement == 1.0, result.message
    finally:
        launcher.stop(server)


def test_streams_under_load_and_counts_tokens_like_the_server(
    tmp_path: Path, llm, load: LoadProcess
) -> None:
    variant = build_llm_variant("q8_0", llm, VariantsSpec())
    adapter, launcher, server = launch(tmp_path, variant, slots=4)
    requests = workload(
        llm,
        prompt_tokens=UniformLength(kind="uniform", min=16, max=64),
        output_tokens=FixedLength(kind="fixed", value=24),
        samples=16,
    )
    try:
        endpoint = adapter.client(server).endpoint(requests)
        before = adapter.server_metrics(server)
        plan = StepPlan(mode="closed", concurrency=4, duration_s=2.0, warmup_s=0.0, timeout_s=30)
        rec = load.run(endpoint, plan)
        after = adapter.server_metrics(server)
    finally:
        launcher.stop(server)
    assert len(rec) >= 8
    assert (rec.error == 0).all(), rec.error_samples
    s = rec.stream
    assert s is not None
    assert (s.output_tokens == 24).all()  # ignore_eos: exactly what was asked
    asked = [requests[i % len(requests)].prompt_len for i in range(len(rec))]
    assert sorted(s.prompt_tokens.tolist()) == sorted(asked)  # the server counts our prompts
    assert ((s.first_ns > rec.sent_ns) & (s.first_ns <= rec.end_ns)).all()  # TTFT <= e2e
    assert (s.events >= 1).all() and (s.events <= 24).all()
    # the usage numbers add up to the server's own counter over the step
    server_view = adapter.breakdown(before, after, len(rec))
    assert server_view["server_output_tokens"] == pytest.approx(s.output_tokens.sum())
    summary = llm_summary(rec, duration_s=2.0, slo_ttft_ms=10_000, slo_tpot_ms=10_000)
    assert summary["output_tokens_per_s"] > 0
    assert summary["llm_goodput_fraction"] == 1.0
    assert summary["itl_p50_ms"] > 0 and summary["tpot_mean_ms"] > 0
    assert not np.isnan(summary["ttft_p50_ms"])


def test_parallel_slots_and_chat(tmp_path: Path, llm, load: LoadProcess) -> None:
    variant = build_llm_variant("q8_0", llm, VariantsSpec())
    adapter, launcher, server = launch(tmp_path, variant, slots=3, ctx_per_slot=512)
    try:
        slots = httpx.get(f"{server.base_url}/slots", timeout=5).json()
        assert len(slots) == 3
        assert "commit" in adapter.stack_versions(server)["llama-server"]  # the binary's word
        assert all(s["n_ctx"] == 512 for s in slots)
        chat = adapter.client(server).for_api("chat")
        gen = chat.generate(workload(llm, api="chat")[0], stream=True)
        assert gen.done and gen.completion_tokens == 32 and gen.prompt_tokens
        assert gen.ttft_ms is not None and gen.ttft_ms <= gen.e2e_ms
        # the load engine reads chat deltas (choices[].delta.content) as it reads completions
        plan = StepPlan(mode="closed", concurrency=3, duration_s=1.0, timeout_s=30)
        rec = load.run(chat.endpoint(workload(llm, api="chat", samples=6)), plan)
        assert len(rec) >= 3 and (rec.error == 0).all(), rec.error_samples
        assert rec.stream is not None and (rec.stream.output_tokens == 32).all()
        assert (rec.stream.events >= 1).all() and (rec.stream.first_ns <= rec.end_ns).all()
    finally:
        launcher.stop(server)


def test_serves_a_users_own_gguf_without_a_reference(tmp_path: Path, llm) -> None:
    built = build_llm_variant("f16", llm, VariantsSpec())
    given_file = tmp_path / "mine.gguf"
    given_file.write_bytes((built.path / "model.gguf").read_bytes())
    given = build_model(TinyLlamaConfig(name="tiny-llama", path=str(given_file)))
    assert given.tokenizer() is None and given.gguf_file == given_file.resolve()
    variant = build_llm_variant("f16", given, VariantsSpec())
    adapter, launcher, server = launch(tmp_path, variant)
    try:
        requests = make_requests(WorkloadSpec(), None, seed=0, context=2048)
        result = check_generation(
            adapter.client(server), checks(variant), requests, samples=8, min_agreement=0.8
        )
        assert result.passed, result.message
        assert "no reference" in result.message
    finally:
        launcher.stop(server)


def test_an_already_running_server_through_openai_http(tmp_path: Path, llm, load) -> None:
    from adapters.openai_http import OpenAIHttpAdapter, OpenAIHttpConfig
    from harness.launchers.external import ExternalConfig, ExternalLauncher

    variant = build_llm_variant("f32", llm, VariantsSpec())
    _, launcher, running = launch(tmp_path, variant, slots=2)
    try:
        adapter = OpenAIHttpAdapter(OpenAIHttpConfig(kind="openai-http", model="anything"))
        external = ExternalLauncher(ExternalConfig(kind="external", url=running.base_url))
        request = LaunchRequest(
            "ext", adapter, variant, tmp_path / "ext", tmp_path / "ext.log", None, 1, 10
        )
        server = external.start(request)
        client = adapter.client(server)
        assert client.model == "anything"
        result = check_generation(client, checks(variant), workload(llm), 16, 0.8)
        assert result.passed and result.agreement == 1.0, result.message
        rec = load.run(
            client.endpoint(workload(llm)[:4]),
            StepPlan(mode="closed", concurrency=2, duration_s=1.0, timeout_s=30),
        )
        assert len(rec) >= 2 and (rec.error == 0).all(), rec.error_samples
    finally:
        launcher.stop(running)


@pytest.mark.parametrize("cache", [False, True])
def test_prompt_cache_hits_are_counted_and_off_unless_asked(
    tmp_path: Path, llm, load: LoadProcess, cache: bool
) -> None:
    """The default workload (unique prompts, caching off) is served without cache hits; a
    shared prefix with caching on is, and the server's counters say how much."""
    variant = build_llm_variant("q8_0", llm, VariantsSpec())
    adapter, launcher, server = launch(tmp_path, variant, prompt_cache=cache, slots=2)
    spec = {"shared_prefix_tokens": 96, "prompt_cache": True} if cache else {}
    requests = workload(
        llm,
        prompt_tokens=UniformLength(kind="uniform", min=16, max=32),
        output_tokens=FixedLength(kind="fixed", value=4),
        samples=256,
        **spec,
    )
    try:
        endpoint = adapter.client(server).endpoint(requests)
        plan = StepPlan(mode="closed", concurrency=2, duration_s=2.0, timeout_s=30)
        rec = load.run(endpoint, plan)  # a first pass: whatever a cache could keep, it has
        before = adapter.server_metrics(server)
        rec = load.run(endpoint, plan)
        after = adapter.server_metrics(server)
    finally:
        launcher.stop(server)
    assert (rec.error == 0).all(), rec.error_samples
    view = adapter.breakdown(before, after, len(rec))
    assert "server_cache_hit_fraction" in view, view
    if cache:  # most of every prompt is the shared prefix: served from the slot's cache
        assert view["server_cache_hit_fraction"] > 0.5, view
    else:
        assert view["server_cache_hit_fraction"] < 0.02, view
    assert adapter.settings()["prompt_cache"] is cache  # recorded with the target
