"""Arrivals as production sends them: ramps, step changes, traces, over-saturation.

Schedules are pure (no network); the saturation cases run the engine against a real
server of known capacity (one request at a time, 20 ms each: 50 requests/s)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.llm.traces import TraceError, TraceSpec, read_azure, synthetic_mooncake, write_mooncake
from harness.llm.workload import trace_requests
from harness.load.endpoints import HttpEndpoint
from harness.load.engine import arrival_offsets_ns, rate_at
from harness.load.fanout import split
from harness.load.http import build_request
from harness.load.plan import StepPlan
from harness.load.worker import LoadProcess
from harness.profiles import plan_for
from harness.scenario import LoadSpec, OpenLevel, TraceLevel, parse_scenario
from harness.stats import summarize
from tests.conftest import client_cpus


def per_second(offsets_ns: np.ndarray, seconds: int) -> list[int]:
    t = offsets_ns / 1e9
    return [int(((t >= s) & (t < s + 1)).sum()) for s in range(seconds)]


def shaped(level: OpenLevel, duration_s: float = 6.0, **plan: object) -> StepPlan:
    load = LoadSpec(profile={"kind": "sweep", "steps": [level.model_dump()]},
                    duration_s=duration_s, warmup_s=0)  # fmt: skip
    return dataclasses.replace(plan_for(level, load, seed=3), **plan)  # type: ignore[arg-type]


@pytest.mark.parametrize("arrival", ["constant", "poisson", "gamma"])
def test_a_linear_ramp_climbs_to_its_rate_and_holds(arrival: str) -> None:
    level = OpenLevel(mode="open", rate=200, arrival=arrival,  # type: ignore[arg-type]
                      burstiness=0.5 if arrival == "gamma" else 1.0,
                      ramp={"from_rate": 20, "over_s": 4})  # fmt: skip
    plan = shaped(level, max_duration_s=None, min_samples=0)
    counts = per_second(arrival_offsets_ns(plan), 6)
    expected = [42.5, 87.5, 132.5, 177.5, 200, 200]  # the integral of the ramp per second
    for got, want in zip(counts, expected, strict=True):
        tolerance = 0.05 if arrival == "constant" else 0.35
        assert abs(got - want) <= tolerance * want + 2, (counts, expected)
    assert "ramp 20->200/s" in plan.label


def test_an_exponential_ramp_grows_by_a_constant_factor() -> None:
    level = OpenLevel(mode="open", rate=400, arrival="constant",
                      ramp={"from_rate": 25, "over_s": 4, "curve": "exponential"})  # fmt: skip
    plan = shaped(level, max_duration_s=None, min_samples=0)
    rates = rate_at(plan, np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))
    assert np.allclose(rates, [25, 50, 100, 200, 400, 400], rtol=0.01)
    counts = per_second(arrival_offsets_ns(plan), 6)
    assert counts[0] < counts[1] < counts[2] < counts[3] < counts[4]
    assert abs(counts[5] - 400) <= 2


def test_step_changes_switch_the_rate_at_their_times() -> None:
    level = OpenLevel(mode="open", rate=50, arrival="constant",
                      changes=[{"at_s": 2, "rate": 300}, {"at_s": 4, "rate": 50}])  # fmt: skip
    plan = shaped(level, max_duration_s=None, min_samples=0)
    counts = per_second(arrival_offsets_ns(plan), 6)
    assert all(abs(c - w) <= 2 for c, w in zip(counts, [50, 50, 300, 300, 50, 50], strict=True))


def test_split_load_processes_share_one_shaped_schedule() -> None:
    level = OpenLevel(mode="open", rate=300, arrival="poisson", ramp={"from_rate": 30, "over_s": 3})
    plan = shaped(level, max_duration_s=None, min_samples=0)
    parts = split(plan, 3)
    merged = np.sort(np.concatenate([arrival_offsets_ns(p) for p in parts]))
    assert np.array_equal(merged, arrival_offsets_ns(plan))


def test_a_trace_plays_its_own_times_faster_by_its_speedup() -> None:
    times = (0.0, 0.5, 1.0, 4.0, 9.0)
    plan = StepPlan(mode="open", arrival="trace", speedup=2.0, duration_s=4.0)
    assert (arrival_offsets_ns(plan, times) / 1e9).tolist() == [0.0, 0.25, 0.5, 2.0]
    first, second = split(plan, 2)
    assert (arrival_offsets_ns(first, times) / 1e9).tolist() == [0.0, 0.5]
    assert (arrival_offsets_ns(second, times) / 1e9).tolist() == [0.25, 2.0]
    with pytest.raises(ValueError, match="no trace"):
        arrival_offsets_ns(plan, None)


def test_shapes_are_validated_with_their_field() -> None:
    with pytest.raises(ValueError, match="a ramp or step changes, not both"):
        OpenLevel(mode="open", rate=5, ramp={"from_rate": 1, "over_s": 2},
                  changes=[{"at_s": 1, "rate": 2}])  # fmt: skip
    with pytest.raises(ValueError, match="at_s must increase"):
        OpenLevel(mode="open", rate=5, changes=[{"at_s": 3, "rate": 2}, {"at_s": 1, "rate": 9}])


def _scenario(tmp_path: Path, workload: str, profile: str) -> str:
    return f"""
name: t
model: {{name: tiny-llama}}
workload: {workload}
load: {{profile: {profile}}}
targets: [{{name: a, adapter: {{kind: llamacpp}}, variant: q8_0}}]
"""


def test_a_trace_profile_needs_a_trace_and_a_trace_needs_its_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"a trace replay needs workload\.trace"):
        parse_scenario(_scenario(tmp_path, "{api: completions}", "{kind: trace}"))
    with pytest.raises(ConfigError, match="no trace file at"):
        parse_scenario(_scenario(tmp_path, "{trace: {path: missing.jsonl}}", "{kind: trace}"))
    write_mooncake(synthetic_mooncake(rows=5), tmp_path / "t.jsonl")
    source = tmp_path / "s.yaml"  # a relative path is taken from the scenario's folder
    text = _scenario(tmp_path, "{trace: {path: t.jsonl}}", "{kind: trace, speedups: [1, 4]}")
    source.write_text(text)
    scenario = parse_scenario(text, source=str(source))
    assert Path(scenario.workload.trace.path) == tmp_path / "t.jsonl"
    assert scenario.load.profile.speedups == [1, 4]
    plan = plan_for(TraceLevel(mode="trace", speedup=4), scenario.load, seed=0)
    assert plan.arrival == "trace" and plan.label == "trace x4" and plan.max_duration_s is None


def test_a_bad_trace_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": 1}\n')
    with pytest.raises(TraceError, match=r"bad.jsonl:2: expected a JSON object"):
        TraceSpec(path=str(path)).read()
    csv = tmp_path / "bad.csv"
    csv.write_text("when,tokens\n1,2\n")
    with pytest.raises(TraceError, match="expected the columns ContextTokens, GeneratedTokens"):
        read_azure(csv)


def test_the_azure_layout_is_read_with_its_seven_digit_timestamps(tmp_path: Path) -> None:
    csv = tmp_path / "azure.csv"
    csv.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2023-11-16 18:15:46.6805900,374,44\n"
                   "2023-11-16 18:15:50.1805900,396,109\n"
                   "2023-11-16 18:15:47.0000000,0,5\n")  # fmt: skip
    rows = TraceSpec(path=str(csv)).read()
    assert [(round(r.t_s, 3), r.input_tokens, r.output_tokens) for r in rows] == [
        (0.0, 374, 44), (3.5, 396, 109)]  # fmt: skip


class _Tokens:
    """Stand-in for a tokenizer: this test checks prompt structure, not tokenization."""

    def encode(self, text: str):
        return type("E", (), {"ids": list(range(len(text.split())))})()

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


def test_shared_blocks_become_shared_prompt_prefixes(tmp_path: Path) -> None:
    rows_json = [
        {"timestamp": 0, "input_length": 1024, "output_length": 64, "hash_ids": [7, 8]},
        {"timestamp": 10, "input_length": 1536, "output_length": 64, "hash_ids": [7, 8, 9]},
        {"timestamp": 20, "input_length": 900, "output_length": 64, "hash_ids": [7, 5]},
        {"timestamp": 30, "input_length": 9000, "output_length": 4000, "hash_ids": []},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_json))
    spec = TraceSpec(path=str(path), scale=0.0625)  # 512-token blocks become 32 tokens
    requests, clipped = trace_requests(spec.read(), spec, _Tokens(), seed=0, context=512)
    a, b, c, d = (r.prompt_ids for r in requests)
    assert [len(a), len(b), len(c)] == [64, 96, 56]
    assert b[:64] == a  # blocks 7, 8 in common
    assert c[:32] == a[:32] and c[32:56] != a[32:56]  # block 7 only
    assert clipped == 1 and len(d) + requests[3].max_tokens == 512


def endpoint(port: int) -> HttpEndpoint:
    body = b'{"inputs":[[0.0]]}'
    return HttpEndpoint(
        "127.0.0.1", port, (build_request("127.0.0.1", port, "POST", "/predict", body),)
    )


@pytest.fixture(scope="module")
def load():
    with LoadProcess(client_cpus()) as proc:
        yield proc


def test_a_step_past_saturation_ends_early_and_says_why(nullserver, load) -> None:
    # capacity 50/s; 150/s arrive: the queue grows by ~100 a second without bound
    with nullserver(delay_ms=20, serial=True) as port:
        plan = StepPlan(mode="open", rate=150, arrival="constant", duration_s=10, warmup_s=0.5)
        rec = load.run(endpoint(port), plan)
    assert rec.extra["ended_by"] == "saturated"
    assert "past saturation: requests in flight grew from" in rec.extra["saturation"]
    window_s = (rec.window_ns - rec.warmup_ns) / 1e9
    assert 2.0 <= window_s < 5.0, window_s  # judged over 2 s of growth, not the full 10 s


def test_a_step_within_capacity_and_one_that_may_not_stop_run_their_duration(
    nullserver, load
) -> None:
    with nullserver(delay_ms=20, serial=True) as port:
        calm = StepPlan(mode="open", rate=30, arrival="poisson", duration_s=3, warmup_s=0.5)
        rec = load.run(endpoint(port), calm)
        assert rec.extra["ended_by"] == "duration"
        assert summarize(rec).errors == 0
        forced = StepPlan(mode="open", rate=150, arrival="constant", duration_s=3, warmup_s=0.5,
                          stop_saturated=False, timeout_s=30)  # fmt: skip
        rec = load.run(endpoint(port), forced)
    assert rec.extra["ended_by"] == "duration"
    assert (rec.window_ns - rec.warmup_ns) / 1e9 == pytest.approx(3.0)


def test_locust_cannot_pace_shaped_schedules() -> None:
    ramp = {"mode": "open", "rate": 5, "ramp": {"from_rate": 1, "over_s": 2}}
    with pytest.raises(ValueError, match="ramps, step changes and trace replay need backend"):
        LoadSpec(profile={"kind": "sweep", "steps": [ramp]}, backend="locust")
    LoadSpec(profile={"kind": "sweep", "steps": [ramp]})  # the engine can
