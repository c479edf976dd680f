"""`servingbench tune`: declared tunables, the tune: section's checks, the search space, the
objective, and a real search of FastAPI (real servers on loopback, Optuna doing the search)
whose every trial is on disk and whose report compares the bests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import registry
from harness.errors import ConfigError
from harness.observer import Observer
from harness.report import render_report
from harness.report.tuning_view import tuning_view
from harness.results import load_run
from harness.scenario import SloSpec, parse_scenario
from harness.tunables import Choice, FloatRange, IntRange, Machine
from harness.tuning import tune_scenario
from harness.tuning_space import objective_value, stack_space
from tests.conftest import client_cpus

BASE = """
name: tune-test
model: {name: digits-cnn}
slo: {latency_ms: 50, percentile: 99}
resources: {server_cpus: [0]}
fidelity: {samples: 8}
load:
  warmup_s: 0.1
  duration_s: 0.6
  max_duration_s: 1.0
  target_warmup_s: 0.1
  calibrate: false
  profile: {kind: closed, concurrency: [8]}
verdicts: {percentiles: [50]}
targets:
  - name: fastapi-onnx
    adapter: {kind: fastapi}
    variant: onnx
"""


def scenario_with(tune: str, base: str = BASE) -> Any:
    return parse_scenario(base + tune, source="tune-test.yaml")


def test_every_declared_tunable_is_a_field_of_its_adapters_config() -> None:
    for kind, cls in registry.adapters().items():
        for tunable in cls.tunables:
            defaults = cls.config_class.model_validate({"kind": kind}).model_dump(mode="json")
            for value in tunable.domain.values()[:1] + tunable.domain.values()[-1:]:
                config = cls.tuned_config(defaults, {tunable.path: value})
                cls.config_class.model_validate(config)  # a valid config, whatever the value
    assert {t.path for t in registry.adapters()["fastapi"].tunables} >= {"workers"}
    assert registry.adapters()["triton"].tunables and registry.adapters()["vllm"].tunables


def test_constraints_and_machine_limits_are_the_adapters_word() -> None:
    triton = registry.adapters()["triton"]
    config = triton.tuned_config({"kind": "triton", "max_batch_size": 8},
                                 {"dynamic_batching.preferred_batch_size": 16})  # fmt: skip
    assert "over max_batch_size" in (triton.tuning_problem(config, Machine(4)) or "")
    fastapi = registry.adapters()["fastapi"]
    assert "server_cpus" in (fastapi.tuning_problem({"workers": 3}, Machine(2)) or "")
    assert fastapi.tuning_problem({"workers": 2}, Machine(2)) is None
    # a batch of one is no batcher at all
    assert fastapi.tuned_config({"kind": "fastapi"}, {"batching.max_batch_size": 1,
                                                     "batching.max_delay_ms": 2.0})[
        "batching"] is None  # fmt: skip


def test_the_space_is_narrowed_by_the_scenario_and_clipped_to_the_machine() -> None:
    scenario = scenario_with("""
tune:
  stacks:
    - target: fastapi-onnx
      space:
        workers: {low: 1, high: 4}
        batching.max_batch_size: [1, 8]
      fixed: [batching.max_delay_ms]
""")
    space = stack_space(scenario, 0, Machine(1))
    assert space.domains["workers"] == IntRange(1, 1)  # one server CPU here
    assert space.domains["batching.max_batch_size"] == Choice((1, 8))
    assert "batching.max_delay_ms" not in space.domains
    assert any("clipped" in n for n in space.notes) and any("fixed" in n for n in space.notes)
    assert space.grid_size() == 2
    assert FloatRange(0.5, 4.0, log=True, grid_points=4).values() == [0.5, 1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("tune", "expected"),
    [
        ("tune: {stacks: [{target: fastapi-onxx}]}", "did you mean 'fastapi-onnx'"),
        ("tune: {stacks: [{target: fastapi-onnx, space: {workerz: [1]}}]}",
         "tune.stacks[0].space.workerz: fastapi has no tunable 'workerz'; did you mean "
         "'workers'"),
        ("tune: {stacks: [{target: fastapi-onnx, space: {workers: [0]}}]}",
         "outside what the adapter declares"),
        ("tune: {objective: {kind: min_latency}, stacks: [{target: fastapi-onnx}]}",
         "min_latency needs `rate`"),
        ("tune: {search: {kind: annealing}, stacks: [{target: fastapi-onnx}]}",
         "'annealing' is not one of: grid, tpe"),
        ("tune: {stacks: []}", "tune.stacks"),
    ],
)  # fmt: skip
def test_bad_tune_sections_name_the_file_the_field_and_what_was_expected(
    tune: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        scenario_with(tune)
    text = str(caught.value)
    assert "tune-test.yaml" in text and expected in text, text


def test_the_objective_is_the_best_step_within_the_slo() -> None:
    slo = SloSpec(latency_ms=10, max_error_rate=0.01)
    rows = pd.DataFrame({"eligible": [True, True, False], "error_rate": [0.0, 0.0, 0.0],
                         "slo_percentile_ms": [4.0, 12.0, 3.0],
                         "throughput_rps": [100.0, 300.0, 900.0]})  # fmt: skip
    assert objective_value(rows, "max_throughput", slo, "tensor") == (100.0, "")
    assert objective_value(rows, "min_latency", slo, "tensor") == (4.0, "")
    over = rows.assign(slo_percentile_ms=[20.0, 30.0, 40.0])
    assert objective_value(over, "max_throughput", slo, "tensor") == (0.0, "no step within the SLO")


class Stop(Observer):
    """Interrupts the search as the second trial starts (as Ctrl-C would)."""

    def on_target_start(self, target: str, index: int, total: int) -> None:
        if target == "trial-001":
            raise KeyboardInterrupt


TUNE_GRID = """
tune:
  search: {kind: grid, probe_s: 0.3, prune_margin: 0.5}
  repeats: 1
  budget_s: 120
  stacks:
    - target: fastapi-onnx
      space:
        batching.max_batch_size: [1, 8]
        batching.max_delay_ms: [1.0]
"""


@pytest.fixture
def cpus_here() -> str:
    cpus = client_cpus()
    return f"resources: {{server_cpus: [0], client_cpus: {cpus}}}\n" if cpus else ""


def test_a_grid_search_keeps_every_trial_and_the_report_compares_the_bests(
    tmp_path: Path,
) -> None:
    scenario = scenario_with(TUNE_GRID)
    outcome = tune_scenario(scenario, out_root=tmp_path)
    assert outcome.status == "finished", outcome.failures
    data = load_run(outcome.run_dir)
    tuning = data.tuning()
    assert tuning is not None
    trials = tuning.trials
    assert len(trials) == 2 and set(trials["trial"]) == {0, 1}
    assert set(trials["state"]) <= {"complete", "pruned"}
    assert (trials["state"] == "complete").any()
    # each trial is a real launch, its steps in tune/<stack>/, read through results.py
    stack_run = tuning.stack_run("fastapi-onnx")
    assert stack_run is not None
    assert set(stack_run.steps["target"]) == {"trial-000", "trial-001"}
    assert {t["status"] for t in stack_run.targets} == {"ok"}
    # the hand-set and the best re-measured side by side, with verdicts between them
    assert set(data.steps["target"]) == {"fastapi-onnx", "fastapi-onnx.tuned"}
    best = outcome.bests["fastapi-onnx"]
    assert best.config["kind"] == "fastapi"
    view = tuning_view(data)
    assert view is not None and view.stacks[0].best_value is not None
    assert view.stacks[0].hand_value is not None and view.stacks[0].gain is not None
    assert len(view.convergence) == 2
    html = render_report(outcome.run_dir).read_text()
    assert 'id="tuning"' in html and 'id="vl-convergence"' in html
    assert html.index('id="tuning"') < html.index('id="matrices"')  # decision first


def test_an_interrupted_search_keeps_its_finished_trials(tmp_path: Path) -> None:
    scenario = scenario_with(TUNE_GRID)
    with pytest.raises(KeyboardInterrupt):
        tune_scenario(scenario, out_root=tmp_path, observer=Stop())
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    data = load_run(run_dir)
    assert data.run["status"] == "interrupted"
    tuning = data.tuning()
    assert tuning is not None and tuning.info["status"] == "interrupted"
    assert list(tuning.trials["trial"]) == [0]
    assert math.isfinite(float(tuning.trials["seconds"].iloc[0]))
    stack_run = tuning.stack_run("fastapi-onnx")
    assert stack_run is not None and "trial-000" in set(stack_run.steps["target"])
