"""Run folders written before the seams change still read, re-render and compare.

tests/fixtures/runs holds two real run folders made by servingbench at revision 4617623 (a
digits-cnn run of two FastAPI targets, a tiny-llm run on llama-server): no `workload`
column, no `eligible`, no error kinds, no owner. Each is copied to a temp folder first, so
nothing is ever written into the repository.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from harness.cli import main as cli
from harness.compare import compare_runs
from harness.mlflow_export import collect
from harness.results import load_run
from harness.summary import build_summary
from harness.verdicts import compute_verdicts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


@pytest.fixture(params=["v0-cnn", "v0-llm"])
def old_run(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / request.param, tmp_path / request.param))


def test_the_reader_fills_what_older_writers_left_out(old_run: Path) -> None:
    run = load_run(old_run)
    assert not run.steps.empty and not run.missing
    assert run.steps["eligible"].tolist() == run.steps["valid"].tolist()  # derived
    assert run.steps["errors_shed"].isna().all()  # not measured then: absent, not zero
    expected = "generate" if old_run.name == "v0-llm" else "tensor"
    assert run.family == expected  # from the token columns, as run.json does not say
    assert run.trusted() == {t["name"] for t in run.targets}


def test_report_summary_and_verdicts_recompute(
    old_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["report", str(old_run)]) == 0
    assert f"report: {old_run / 'report.html'}" in capsys.readouterr().out
    html = (old_run / "report.html").read_text()
    for target in load_run(old_run).targets:
        assert target["name"] in html
    summary = build_summary(old_run)
    assert summary["status"] == "finished"
    lead = summary["winners"]["highest_throughput_under_slo"]
    assert lead is None or lead["target"] in summary["targets"]
    frame = compute_verdicts(load_run(old_run))
    if old_run.name == "v0-cnn":  # two targets, two levels: every pair has its words
        assert len(frame) == 2 * 3 and frame["trusted"].all()
    else:  # the LLM run's one target: nothing to compare, and no error
        assert frame.empty


def test_compare_and_mlflow_export_read_them(old_run: Path) -> None:
    changes = compare_runs(old_run, old_run)
    assert len(changes) and not changes["regression"].any()
    assert all(math.isfinite(r) for r in changes["ratio"] if r == r)
    logged = collect(old_run)
    assert logged["experiment"] in ("old-cnn", "old-llm")
    assert any(key.endswith("/throughput_rps") for key, _, _ in logged["metrics"])


def test_a_key_added_since_with_its_default_is_no_difference(old_run: Path, tmp_path: Path) -> None:
    """A baseline written before `burstiness` existed compares with a run that records it
    at its default: a new key is not a changed scenario (which would block the gate)."""
    import json

    from harness.compare import mismatches

    newer = Path(shutil.copytree(old_run, tmp_path / "newer"))
    info = json.loads((newer / "run.json").read_text())
    for step in info["scenario"]["load"]["profile"].get("steps", []):
        if step.get("mode") == "open":
            step["burstiness"] = 1.0
    (newer / "run.json").write_text(json.dumps(info))
    assert [m for m in mismatches([load_run(old_run)], [load_run(newer)]) if m.blocking] == []
    for step in info["scenario"]["load"]["profile"].get("steps", []):
        if step.get("mode") == "open":
            step["rate"] = 2 * step["rate"]  # a real change still blocks
    (newer / "run.json").write_text(json.dumps(info))
    changed = [m for m in mismatches([load_run(old_run)], [load_run(newer)]) if m.blocking]
    assert (len(changed) == 1) == (old_run.name == "v0-cnn"), changed
