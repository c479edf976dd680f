"""Production-shaped load on a real llama-server: a Mooncake-layout trace replayed with its
own timing, a ramp past capacity that ends early, the server's gauges over each step, a
request id on every generation, and the report's Pareto and server views.

`nox -s tests` builds llama-server first (cached per machine), as for test_llamacpp.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import servingbench
from adapters import _llamacpp_build
from harness.llm.traces import synthetic_mooncake, write_mooncake

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

SCENARIO = """
name: trace-test
model: {name: tiny-llama}
workload:
  trace: {path: trace.jsonl, scale: 0.0625}
fidelity: {samples: 4}
verdicts: {percentiles: [50]}
slo: {latency_ms: 2000, percentile: 50, ttft_ms: 250, tpot_ms: 25}
resources: {server_cpus: [0], client_cpus: [1]}
telemetry: {server_interval_s: 0.2}
load:
  warmup_s: 0.2
  duration_s: 5
  target_warmup_s: 0.5
  timeout_s: 60
  calibrate: false
  profile:
    kind: sweep
    steps:
      - {mode: trace, speedup: 2}
      - {mode: open, rate: 150, ramp: {from_rate: 5, over_s: 3}}
targets:
  - {name: llama, adapter: {kind: llamacpp, slots: 1}, variant: q8_0}
"""


def test_a_trace_and_a_ramp_past_capacity_on_llama_server(tmp_path: Path) -> None:
    write_mooncake(synthetic_mooncake(rows=40, rate=10, seed=1), tmp_path / "trace.jsonl")
    (tmp_path / "s.yaml").write_text(SCENARIO)
    run = servingbench.run(str(tmp_path / "s.yaml"), out=str(tmp_path / "results"))
    assert run.status == "finished", run.failures
    steps = run.steps.set_index("label")

    # the trace: every one of its 40 requests, at twice its pace, and nothing else
    trace = steps.loc["trace x2"]
    assert 30 <= trace["requests"] <= 40 and trace["errors"] == 0
    assert trace["ended_by"] == "duration"
    workload = json.loads((run.path / "workload.json").read_text())
    assert workload["trace_rows"] == 40 and 0 < workload["trace_reusable_prefix_fraction"] < 1

    # the ramp climbs past what one slot serves: it ends early, is not ranked, says why
    ramp = steps.loc["open 150/s poisson ramp 5->150/s (linear, 3 s)"]
    assert ramp["ended_by"] == "saturated"
    # on a loaded box the client's own send lag can void the step first; either way it is
    # never ranked, and the reason says which
    assert not ramp["eligible"]
    assert any(why in ramp["ineligible_reason"] for why in ("past saturation", "send lag"))

    # the server's own gauges over each step, on the sampler's interval
    series = pd.read_parquet(run.path / "telemetry" / "llama" / "001-r0-server.parquet")
    assert {"t_s", "running", "waiting"} <= set(series.columns)
    assert series["waiting"].max() > 0  # the queue the ramp built, as the server saw it
    assert series["t_s"].diff().median() == pytest.approx(0.2, abs=0.05)

    # every generation carried an id, kept with its record and unique
    records = run.records("llama")
    assert records["request_id"].notna().all() and records["request_id"].is_unique

    html = (run.path / "report.html").read_text()
    for chart in ("vl-llmpareto-spec", "vl-llmserver-spec"):
        assert chart in html
    assert "Replayed from the trace" in html and ("past saturation" in html or "send lag" in html)


CONVERSATIONS = """
name: chat-test
model: {name: tiny-llama}
workload:
  api: chat
  prompt_tokens: {kind: uniform, min: 16, max: 48}
  output_tokens: {kind: fixed, value: 16}
  samples: 32
  prompt_cache: true
  conversation: {turns: {kind: fixed, value: 3}, think_time_s: 0.1, system_prompt_tokens: 64}
fidelity: {samples: 4}
verdicts: {percentiles: [50]}
slo: {latency_ms: 2000, percentile: 50, ttft_ms: 250, tpot_ms: 25}
resources: {server_cpus: [0], client_cpus: [1]}
load:
  warmup_s: 0.2
  duration_s: 3
  target_warmup_s: 0.3
  timeout_s: 60
  calibrate: false
  profile: {kind: sweep, steps: [{mode: closed, concurrency: 2}, {mode: open, rate: 2}]}
targets:
  - {name: llama, adapter: {kind: llamacpp, slots: 2}, variant: q8_0}
"""


def test_conversations_carry_their_history_on_llama_server(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(CONVERSATIONS)
    run = servingbench.run(str(tmp_path / "s.yaml"), out=str(tmp_path / "results"))
    assert run.status == "finished", run.failures
    records = run.records("llama")
    done = records[records["error"] == 0]
    assert set(done["turn"]) == {0, 1, 2}
    # each turn resends the history: the earlier turns and the server's 16-token answers
    prompts = done.groupby("turn")["prompt_tokens"].mean()
    assert prompts[1] > prompts[0] + 16 + 16 and prompts[2] > prompts[1] + 16 + 16
    for _, step in run.steps.iterrows():
        assert step["errors"] == 0 and step["turns_sent"] > 0
        assert step["ttft_p50_first_turn_ms"] > 0 and step["ttft_p50_later_turns_ms"] > 0
        # the cache was asked for: the shared system prompt and each history hit it
        assert step["server_cache_hit_fraction"] > 0.2 and step["eligible"]
