"""Numbers people can trust, against real servers with known behaviour on loopback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from harness.load.endpoints import HttpEndpoint
from harness.load.http import build_request
from harness.load.plan import StepPlan
from harness.load.worker import LoadProcess
from harness.runner import run_scenario
from harness.scenario import parse_scenario
from harness.stats import StatsRules, summarize
from tests.conftest import client_cpus

pytestmark = pytest.mark.usefixtures("no_orphans")


def endpoint(port: int) -> HttpEndpoint:
    request = build_request("127.0.0.1", port, "POST", "/predict", b'{"inputs":[[0.0]]}')
    return HttpEndpoint("127.0.0.1", port, (request,))


@pytest.fixture(scope="module")
def load():
    with LoadProcess(client_cpus()) as proc:
        yield proc


def test_percentile_intervals_contain_the_true_values(nullserver, load) -> None:
    # delay = 10 ms + exponential(mean 20 ms): true p50 = 10 + 20 ln 2 = 23.86 ms, true
    # p99 = 10 + 20 ln 100 = 102.1 ms, plus the loopback/client cost measured against the
    # same server with no delay.
    with nullserver() as port:
        base = summarize(
            load.run(endpoint(port), StepPlan(mode="closed", concurrency=1, duration_s=1))
        )
    with nullserver(delay_ms=10, jitter_ms=20, jitter_dist="exponential") as port:
        plan = StepPlan(mode="open", rate=400, arrival="constant", duration_s=4, warmup_s=0.3)
        s = summarize(load.run(endpoint(port), plan))
    overhead = base.p50_ms
    assert s.requests == 1600
    assert s.p50_ms_ci_low <= 10 + 20 * math.log(2) + overhead <= s.p50_ms_ci_high, s
    assert s.p99_ms_ci_low <= 10 + 20 * math.log(100) + overhead <= s.p99_ms_ci_high, s
    assert s.throughput_rps_ci_low <= 400 <= s.throughput_rps_ci_high


def test_a_noisy_server_is_marked_unstable(nullserver, load) -> None:
    plan = StepPlan(mode="open", rate=200, arrival="constant", duration_s=4)
    rules = StatsRules(window_s=1.0, windows=3, tolerance=0.10)
    with nullserver(delay_ms=2, stall_every_s=2.5, stall_s=0.6) as port:
        noisy = summarize(load.run(endpoint(port), plan), rules=rules)
    with nullserver(delay_ms=2) as port:
        steady = summarize(load.run(endpoint(port), plan), rules=rules)
    assert noisy.stable is False
    assert steady.stable is True


SCENARIO = """\
name: trust
model: {{name: digits-cnn}}
fidelity: {{samples: 1, atol: 1000, min_agreement: 0}}
slo: {{latency_ms: {slo}, percentile: {percentile}}}
repeats: {repeats}
load:
  duration_s: {duration}
  warmup_s: 0.3
  target_warmup_s: 0.2
  profile: {profile}
targets:
{targets}
"""


# the answers of a model of the digits CNN's shape (ten scores): the load engine checks that
TEN_SCORES = "[[0,0,0,0,0,0,0,0,0,0]]"


def external(name: str, port: int) -> str:
    return (
        f"  - name: {name}\n    adapter: {{kind: http}}\n    variant: eager\n"
        f"    launcher: {{kind: external, url: 'http://127.0.0.1:{port}'}}\n"
    )


def test_slo_search_finds_a_known_capacity(nullserver, tmp_path: Path) -> None:
    # One request at a time, 5 ms each: capacity 200 req/s. With constant arrivals nothing
    # queues below capacity and the backlog grows without bound above it.
    profile = (
        "{kind: slo_search, start_rate: 50, growth: 2, precision: 0.04, max_steps: 12,"
        " arrival: constant}"
    )
    with nullserver(delay_ms=5, serial=True, outputs=TEN_SCORES) as port:
        text = SCENARIO.format(
            slo=50,
            percentile=90,
            repeats=1,
            duration=1.5,
            profile=profile,
            targets=external("serial", port),
        )
        outcome = run_scenario(parse_scenario(text), out_root=tmp_path)
    [target] = json.loads((outcome.run_dir / "targets.json").read_text())
    search = target["search"]
    lo, hi = search["bracket"]
    assert search["converged"], search
    assert lo <= 200 * 1.03 and hi >= 200 * 0.97, search  # the capacity is inside
    assert hi / lo - 1 <= 0.04 + 1e-9
    steps = pd.read_csv(outcome.run_dir / "steps.csv")
    assert len(steps) == search["steps"]


def test_verdicts_for_identical_and_faster_servers(nullserver, tmp_path: Path) -> None:
    profile = "{kind: closed, concurrency: [4]}"
    with (
        nullserver(delay_ms=5, jitter_ms=2, seed=1, outputs=TEN_SCORES) as a,
        nullserver(delay_ms=5, jitter_ms=2, seed=1, outputs=TEN_SCORES) as b,
        nullserver(delay_ms=4, jitter_ms=1.6, seed=1, outputs=TEN_SCORES) as c,
    ):
        targets = external("a", a) + external("b", b) + external("fast", c)
        text = SCENARIO.format(
            slo=100, percentile=99, repeats=2, duration=2, profile=profile, targets=targets
        )
        outcome = run_scenario(parse_scenario(text), out_root=tmp_path)
    verdicts = pd.read_csv(outcome.run_dir / "verdicts.csv")

    def word(x: str, y: str, metric: str) -> str:
        row = verdicts[
            (verdicts.target_a == x) & (verdicts.target_b == y) & (verdicts.metric == metric)
        ]
        return str(row.verdict.iloc[0])

    assert word("a", "b", "p50_ms") == "no significant difference"
    assert word("a", "b", "throughput_rps") == "no significant difference"
    assert word("a", "fast", "p50_ms") == "slower"  # a is slower than the 20% faster server
    assert word("a", "fast", "throughput_rps") == "slower"
    ratio = verdicts[
        (verdicts.target_a == "a") & (verdicts.target_b == "fast") & (verdicts.metric == "p50_ms")
    ].ratio.iloc[0]
    assert ratio == pytest.approx(1.25, rel=0.1) and not math.isnan(ratio)
