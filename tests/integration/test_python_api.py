"""The Python API and `--json`: the same run folder as the CLI's, as DataFrames and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import servingbench
from harness.errors import RunFolderError
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("no_orphans")

FLOOR = """\
name: api
model: {name: digits-cnn}
dataset: {samples: 32}
fidelity: {samples: 8}
slo: {latency_ms: 50}
load:
  duration_s: 0.5
  warmup_s: 0.1
  target_warmup_s: 0.1
  profile: {kind: closed, concurrency: [1, 2]}
targets:
  - name: "floor-<b>"
    adapter: {kind: inprocess}
    variant: onnx
"""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, build_cache: Path) -> Path:
    path = tmp_path_factory.mktemp("api") / "api.yaml"
    path.write_text(FLOOR.replace('"floor-<b>"', "floor"))
    return path


def test_run_returns_the_folder_as_dataframes(scenario: Path, tmp_path: Path) -> None:
    run = servingbench.run(scenario, out=tmp_path, sets=["load.duration_s=0.4"])
    assert run.status == "finished" and run.failures == []
    assert run.report_path is not None and run.report_path.is_file()
    assert isinstance(run.steps, pd.DataFrame)
    assert list(run.steps["label"]) == ["closed c=1", "closed c=2"]
    assert (run.steps["duration_s"] >= 0.4).all()  # the --set override took effect
    records = run.records("floor")
    assert len(records) >= run.steps["requests"].sum()  # the warm-up is recorded too
    assert {"label", "repeat"} <= set(records.columns)
    assert run.records("floor", "closed c=2")["label"].eq("closed c=2").all()
    with pytest.raises(KeyError, match="targets with steps: floor"):
        run.records("nope")
    again = servingbench.load_run(run.path)
    pd.testing.assert_frame_equal(again.steps, run.steps)
    assert again.decision.headline == run.decision.headline
    assert json.dumps(again.to_json(), allow_nan=False)  # null, never NaN
    assert str(run.path) in repr(run)


def test_html_representation_escapes_names(build_cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(FLOOR.replace('"floor-<b>"', "floor.b").replace("[1, 2]", "1"))
    run = servingbench.run(path, out=tmp_path / "results", report=False)
    assert run.report_path is None
    page = run._repr_html_()
    assert "<b>" in page and run.decision.headline.split()[0] in page
    assert str(run.path) in page


def test_load_run_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"no run\.json"):
        servingbench.load_run(tmp_path)


def test_run_json_is_stdout_alone(scenario: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(tmp_path),
         "--json", "--no-report"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # nothing else on stdout
    assert data["exit_code"] == 0 and data["status"] == "finished"
    assert Path(data["run_dir"]).parent == tmp_path.resolve()
    assert data["report"] is None
    assert data["decision"]["headline"]
    assert isinstance(data["decision"]["table"], list)


@pytest.mark.parametrize("command", ["list", "doctor"])
def test_list_and_doctor_json(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", command, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    names = {row["name"] for row in rows}
    assert "fastapi" in names
    key = "available" if command == "list" else "ok"
    assert all(isinstance(row[key], bool) for row in rows)
