"""`servingbench compare` as a CI gate, on real runs against servers with known latency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.compare import compare, compare_runs
from harness.runner import run_scenario
from harness.scenario import parse_scenario
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("no_orphans")

SCENARIO = """\
name: gate
model: {{name: digits-cnn}}
fidelity: {{samples: 1}}
slo: {{latency_ms: 50, percentile: 50}}  # a 1 s step has no p99
repeats: {repeats}
load:
  calibrate: false
  duration_s: {duration}
  warmup_s: 0.2
  target_warmup_s: 0.2
  profile: {{kind: closed, concurrency: [4]}}
targets:
  - name: service
    adapter: {{kind: http}}
    variant: eager
    launcher: {{kind: external, url: "http://127.0.0.1:{port}"}}
"""


def one_run(port: int, out: Path, repeats: int = 3, duration: float = 1.0) -> Path:
    text = SCENARIO.format(port=port, repeats=repeats, duration=duration)
    return run_scenario(parse_scenario(text), out_root=out).run_dir


def gate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "compare", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip


# answers of the model's shape (ten scores), not its values: they pass the load engine's
# answer check, and fail the fidelity check
TEN_SCORES = "[[0,0,0,0,0,0,0,0,0,0]]"


def test_same_build_passes_and_a_regression_fails(nullserver, tmp_path: Path) -> None:
    with nullserver(delay_ms=5, jitter_ms=1, seed=1, outputs=TEN_SCORES) as port:
        base = one_run(port, tmp_path / "a")
        again = one_run(port, tmp_path / "b")
    with nullserver(delay_ms=7, jitter_ms=1.4, seed=1, outputs=TEN_SCORES) as port:  # slower
        slower = one_run(port, tmp_path / "c")

    same = compare_runs(base, again)
    assert len(same) == 3 and not same.regression.any(), same
    by_metric = same.set_index("metric")
    assert (same["n_a"] == 3).all() and (
        by_metric.loc[["p50_ms", "throughput_rps"], "detectable"] > 0
    ).all()
    # each step ran until it had a p99's 1,000 samples (or its maximum): where it had
    # them the p99 is gated too, where not it is said and never gated
    assert by_metric.loc["p99_ms", "word"] in ("no change", "insufficient data")
    result = gate(base, again)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no significant regression" in result.stdout

    worse = compare_runs(base, slower).set_index("metric")
    assert worse.loc["p50_ms", "regression"] and worse.loc["throughput_rps", "regression"]
    assert worse.loc["p50_ms", "ratio"] == pytest.approx(1.4, rel=0.1)
    assert worse.loc["p50_ms", "ci_low"] > 1.1  # the whole interval beyond the threshold
    result = gate(base, slower, "--json")
    assert result.returncode == 1
    found = json.loads(result.stdout)
    assert found["exit_code"] == 1
    assert {c["word"] for c in found["changes"] if c["metric"] == "p50_ms"} == {"regression"}
    # the port of an external server is where it listens, not a setting that changed
    assert not [m for m in found["mismatches"] if m["kind"] == "target settings"]

    summary = json.loads((slower / "summary.json").read_text())
    service = summary["targets"]["service"]
    assert service["throughput_under_slo_rps"] > 0 and service["usd_per_million"] > 0
    # the null server's answers are not the model's: measured, costed, but never a winner
    assert "fidelity check failed" in service["caveats"]
    assert summary["winners"]["highest_throughput_under_slo"] is None
    assert summary["price"]["hardware"] == "cpu-2vcpu"

    # the baseline store: `runs` lists it, --baseline takes its latest run of the scenario
    store = tmp_path / "store"
    store.mkdir()
    for run in (base, again):
        run.rename(store / run.name)
    listing = subprocess.run([sys.executable, "-m", "harness.cli", "runs", str(store), "--json"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    stored = json.loads(listing.stdout)
    assert [r["scenario"] for r in stored] == ["gate", "gate"] and stored[0]["repeats"] == 3
    result = gate("--baseline", store, "--history", "2", slower)
    assert result.returncode == 1 and "2 runs" in result.stdout, result.stdout
    assert "regression" in result.stdout


def test_one_run_a_side_says_what_it_cannot_know(nullserver, tmp_path: Path) -> None:
    with nullserver(delay_ms=5, jitter_ms=1, seed=1, outputs=TEN_SCORES) as port:
        base = one_run(port, tmp_path / "a", repeats=1, duration=1.5)
        again = one_run(port, tmp_path / "b", repeats=1, duration=1.5)
    result = compare([base], [again])
    rows = result.changes.set_index("metric").loc[["p50_ms", "throughput_rps"]]
    assert (rows["word"] == "inconclusive").all() and rows["ci_low"].notna().all()
    assert not result.changes["regression"].any()  # the within-run interval, shown, not gated
    done = gate(base, again)
    assert done.returncode == 3, done.stdout
    assert "inconclusive" in done.stdout and "repeats" in done.stdout


def test_a_different_scenario_is_listed_first_and_blocks(nullserver, tmp_path: Path) -> None:
    with nullserver(delay_ms=2, seed=1, outputs=TEN_SCORES) as port:
        base = one_run(port, tmp_path / "a", repeats=2, duration=0.8)
        longer = one_run(port, tmp_path / "b", repeats=2, duration=1.2)
    done = gate(base, longer)
    assert done.returncode == 2, done.stdout
    out = done.stdout
    assert out.index("load.duration_s: 0.8 -> 1.2") < out.index("Changes")
    assert "cannot compare" in out
    assert gate(base, longer, "--allow-mismatch").returncode in (0, 1)
    assert gate(tmp_path / "nowhere", base).returncode == 2  # never 1 for a bad argument
