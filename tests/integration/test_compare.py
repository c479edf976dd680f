"""`servingbench compare` as a CI gate, on real runs against servers with known latency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.compare import compare_runs
from harness.runner import run_scenario
from harness.scenario import parse_scenario
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("no_orphans")

SCENARIO = """\
name: gate
model: {{name: digits-cnn}}
fidelity: {{samples: 1, atol: 1000, min_agreement: 0}}
slo: {{latency_ms: 50}}
load:
  calibrate: false
  duration_s: 3
  warmup_s: 0.3
  target_warmup_s: 0.2
  profile: {{kind: closed, concurrency: [4]}}
targets:
  - name: service
    adapter: {{kind: http}}
    variant: eager
    launcher: {{kind: external, url: "http://127.0.0.1:{port}"}}
"""


def one_run(port: int, out: Path) -> Path:
    return run_scenario(parse_scenario(SCENARIO.format(port=port)), out_root=out).run_dir


def gate(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(a), str(b)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_same_build_passes_and_a_regression_fails(nullserver, tmp_path: Path) -> None:
    with nullserver(delay_ms=5, jitter_ms=1, seed=1) as port:
        base = one_run(port, tmp_path / "a")
        again = one_run(port, tmp_path / "b")
    with nullserver(delay_ms=7, jitter_ms=1.4, seed=1) as port:  # 40% slower
        slower = one_run(port, tmp_path / "c")

    same = compare_runs(base, again)
    assert len(same) == 3 and not same.regression.any(), same
    result = gate(base, again)
    assert result.returncode == 0, result.stdout + result.stderr

    worse = compare_runs(base, slower).set_index("metric")
    assert worse.loc["p50_ms", "regression"] and worse.loc["throughput_rps", "regression"]
    assert worse.loc["p50_ms", "ratio"] == pytest.approx(1.4, rel=0.1)
    result = gate(base, slower)
    assert result.returncode == 1 and "REGRESSION" in result.stdout

    summary = json.loads((slower / "summary.json").read_text())
    service = summary["targets"]["service"]
    assert service["throughput_under_slo_rps"] > 0 and service["usd_per_million"] > 0
    # the null server's answers are not the model's: measured, costed, but never a winner
    assert "fidelity check failed" in service["caveats"]
    assert summary["winners"]["highest_throughput_under_slo"] is None
    assert summary["price"]["hardware"] == "cpu-2vcpu"
