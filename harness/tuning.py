"""`servingbench tune`: every stack at its best configuration, under one SLO.

For each stack in the scenario's `tune:` section, Optuna proposes configurations (every
combination with `GridSampler`, or `TPESampler`) from the space its adapter declares
(`harness/tunables.py`, `harness/tuning_space.py`). Each trial is a real launch and
measurement through the runner: the stack's target with the trial's settings, run like any
other target (fidelity, warm-up, steps) into `tune/<stack>/`, a run folder of its own. With
a probe, each trial first runs its first level for `probe_s`; its figure goes to Optuna
(`trial.report`), and a trial that is clearly worse than the best probe of a finished
trial (`ClearlyWorse`, asked through `trial.should_prune()`) ends there. Every trial is a
row of `tune/trials.csv`, written as it ends, so an interrupted search keeps them all.

Then the hand-set target and the best configuration of each stack are measured again,
`tune.repeats` times, as one ordinary run into the run folder itself: the report's
decision, matrices and verdicts are those of the bests, side by side with the hand-set.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from harness import registry
from harness.errors import ConfigError
from harness.load.backend import LoadBackend
from harness.observer import Observer
from harness.profiles import PlanGenerator, levels, meets_slo, plan_for, plans
from harness.provenance import collect
from harness.results import RunFolder, load_run, new_run_id, owner
from harness.runner import RunOutcome, _load_backend, _Run, run_scenario
from harness.scenario import (
    LoadSpec,
    OpenProfile,
    Scenario,
    SloSpec,
    VerdictSpec,
    scenario_model,
)
from harness.stats import StepSummary
from harness.tunables import Choice, Domain, IntRange, Machine
from harness.tuning_space import StackSpace, objective_value, stack_space

TUNED_SUFFIX = ".tuned"  # the re-measured best of stack X is the target "X.tuned"


@dataclass
class TrialResult:
    stack: str
    trial: int
    state: str  # complete, pruned, failed, skipped (invalid or unsafe: never launched)
    value: float | None
    probe_value: float | None
    params: dict[str, Any]
    config: dict[str, Any]
    seconds: float
    started_at: str
    reason: str = ""
    target: str = ""  # its target in tune/<stack>/ (none when skipped)

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TuneOutcome:
    run_dir: Path
    status: str
    failures: list[str] = field(default_factory=list)
    trials: list[TrialResult] = field(default_factory=list)
    bests: dict[str, TrialResult] = field(default_factory=dict)
    search_s: dict[str, float] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the objective


def maximises(scenario: Scenario) -> bool:
    assert scenario.tune is not None
    return scenario.tune.objective.kind == "max_throughput"


def probe_value(summary: StepSummary, kind: str, slo: SloSpec) -> float:
    """The probe step's figure: its throughput if within the SLO, else 0 (max_throughput);
    its SLO-percentile latency, infinite when it has none (min_latency)."""
    if kind == "min_latency":
        value = summary.slo_percentile_ms
        ranked = summary.eligible and summary.error_rate <= slo.max_error_rate
        return float(value) if ranked and value == value else math.inf
    return float(summary.throughput_rps) if meets_slo(summary, slo) else 0.0


def _probe_plans(
    probe_s: float, report: Callable[[float], bool], kind: str
) -> Callable[..., PlanGenerator]:
    """A profile for one trial: its first level for `probe_s`, judged by `report` (True:
    stop, it is clearly worse), then the scenario's own profile."""

    def source(
        load: LoadSpec, seed: int, slo: SloSpec | None = None, verdicts: VerdictSpec | None = None
    ) -> PlanGenerator:
        first = plan_for(
            levels(load.profile)[0], load, seed, duration_s=probe_s, slo=slo, verdicts=verdicts
        )
        probe = dataclasses.replace(first, max_duration_s=None, min_samples=0, settle=False)
        summary = yield probe
        value = probe_value(summary, kind, slo or SloSpec()) if summary is not None else 0.0
        if report(value):
            return {"kind": "tune_probe", "pruned": True, "probe_value": value}
        found = yield from plans(load, seed, slo, verdicts)
        return {
            "kind": "tune_probe",
            "pruned": False,
            "probe_value": value,
            **({"search": found} if found else {}),
        }

    return source


def clearly_worse_pruner(margin: float) -> Any:
    """An Optuna pruner: stop a trial whose latest reported figure is worse than the best
    figure a finished trial reported at that step by more than `margin` (a fraction)."""
    import optuna
    from optuna.trial import TrialState

    class ClearlyWorse(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            step = trial.last_step
            if step is None:
                return False
            value = trial.intermediate_values[step]
            done = [
                t.intermediate_values[step]
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if step in t.intermediate_values
            ]
            done = [v for v in done if math.isfinite(v)]
            if not done:
                return False
            if study.direction == optuna.study.StudyDirection.MAXIMIZE:
                return bool(value < max(done) * (1 - margin))
            return bool(value > min(done) * (1 + margin))

    return ClearlyWorse()


def _suggest(trial: Any, path: str, domain: Domain) -> Any:
    if isinstance(domain, Choice):
        return trial.suggest_categorical(path, list(domain.options))
    if isinstance(domain, IntRange):
        log = domain.log and domain.step == 1
        return trial.suggest_int(path, domain.low, domain.high, step=domain.step, log=log)
    return trial.suggest_float(path, domain.low, domain.high, log=domain.log)


# ---------------------------------------------------------------- one stack's search


def _trial_scenario(scenario: Scenario) -> Scenario:
    """What every trial runs: the scenario's load (an open level at the objective's rate
    for min_latency), once, without the load generator's calibration (done once per run)."""
    assert scenario.tune is not None
    load = scenario.load
    objective = scenario.tune.objective
    if objective.kind == "min_latency" and objective.rate is not None:
        load = load.model_copy(update={"profile": OpenProfile(kind="open", rates=[objective.rate])})
    return scenario.model_copy(
        update={"load": load.model_copy(update={"calibrate": False}), "repeats": 1}
    )


def _run_info(
    scenario: Scenario,
    folder: RunFolder,
    scenario_file: str,
    workload: str,
    command: list[str],
    provenance: dict[str, Any],
    status: str,
) -> dict[str, Any]:
    return {
        "run_id": folder.path.name,
        "kind": "tune",
        "scenario_name": scenario.name,
        "scenario_file": scenario_file,
        "workload": workload,
        "scenario": scenario.model_dump(mode="json"),
        "command": command,
        "started_at": _now(),
        "finished_at": None,
        "status": status,
        "failures": [],
        "owner": owner(),
        "warnings": [],
        "provenance": provenance,
    }


class _StackSearch:
    """One stack's study: ask Optuna, launch and measure, tell it the figure."""

    def __init__(self, tuner: _Tuner, index: int, space: StackSpace) -> None:
        self.tuner, self.index, self.space = tuner, index, space
        scenario = tuner.scenario
        assert scenario.tune is not None
        self.spec = scenario.tune
        self.base_target = next(
            t
            for t in scenario.targets  # type: ignore[attr-defined]
            if t.name == space.target
        )
        self.cls = registry.adapters()[self.base_target.adapter.kind]
        self.base = self.base_target.adapter.model_dump(mode="json")
        self.trials: list[TrialResult] = []

    def study(self) -> Any:
        import optuna

        search = self.spec.search
        direction: Literal["maximize", "minimize"] = (
            "maximize" if maximises(self.tuner.scenario) else "minimize"
        )
        if search.kind == "grid":
            sampler: Any = optuna.samplers.GridSampler(self.space.grid(), seed=search.seed)
        else:
            sampler = optuna.samplers.TPESampler(
                seed=search.seed, n_startup_trials=search.startup_trials
            )
        pruner = (
            clearly_worse_pruner(search.prune_margin)
            if search.probe_s
            else optuna.pruners.NopPruner()
        )
        study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
        if search.kind == "tpe":  # start from the hand-set configuration where it fits
            hand = {
                p: v
                for p, v in self.space.hand.items()
                if p in self.space.domains and self.space.domains[p].contains(v)
            }
            if len(hand) == len(self.space.domains):
                study.enqueue_trial(hand)
        return study

    def run(self, load: LoadBackend, budget_s: float) -> list[TrialResult]:
        from optuna.trial import TrialState

        tuner, search = self.tuner, self.spec.search
        folder = tuner.folder.tune_stack(self.space.target)
        trial_scenario = _trial_scenario(tuner.scenario)
        folder.write_run(
            _run_info(
                trial_scenario,
                folder,
                tuner.scenario_file,
                tuner.workload,
                tuner.command,
                tuner.provenance,
                "running",
            )
        )
        run = _Run(trial_scenario, folder, tuner.observer)
        run.check_gpus()
        with run.environments_beside([self.base_target]):
            run.prepare([self.base_target.variant])
        study = self.study()
        limit = (
            min(search.trials, self.space.grid_size()) if search.kind == "grid" else search.trials
        )
        began = time.monotonic()
        launched = asked = 0
        kind = self.spec.objective.kind
        while launched < limit and asked < 3 * limit + 10:
            spent = time.monotonic() - began
            average = spent / launched if launched else 0.0
            if spent + average > budget_s:
                tuner.observer.on_phase(
                    f"{self.space.target}: the {budget_s:.0f} s budget is "
                    f"spent after {launched} trial(s)"
                )
                break
            if search.kind == "grid" and len(study.trials) >= self.space.grid_size():
                break
            trial = study.ask()
            asked += 1
            params = {p: _suggest(trial, p, d) for p, d in self.space.domains.items()}
            config = self.cls.tuned_config(self.base, params)
            started, t0 = _now(), time.monotonic()
            problem = self._problem(config)
            if problem is not None:  # never launched: recorded, and the sampler told
                _tell(study, trial, state=TrialState.FAIL)
                self._keep(
                    TrialResult(
                        self.space.target,
                        trial.number,
                        "skipped",
                        None,
                        None,
                        params,
                        config,
                        0.0,
                        started,
                        problem,
                    )
                )
                continue
            launched += 1
            name = f"trial-{trial.number:03d}"
            probes: list[float] = []

            def report(value: float, trial: Any = trial, probes: list[float] = probes) -> bool:
                probes.append(value)
                trial.report(value if math.isfinite(value) else 1e12, 0)
                return bool(trial.should_prune())

            run.plan_source = (
                _probe_plans(search.probe_s, report, kind) if search.probe_s else plans
            )
            target = self.base_target.model_copy(
                update={"name": name, "adapter": self.cls.config_class.model_validate(config)}
            )
            tuner.observer.on_phase(
                f"{self.space.target}: trial {trial.number} "
                f"({launched}/{limit}) {_params_text(params)}"
            )
            run.run_target(target, load, 0, launched - 1, limit)
            result = self._judge(
                folder, name, trial, params, config, started, time.monotonic() - t0, probes
            )
            if result.state == "complete" and result.value is not None:
                _tell(study, trial, result.value)
            elif result.state == "pruned":
                _tell(study, trial, state=TrialState.PRUNED)
            else:
                _tell(study, trial, state=TrialState.FAIL)
            self._keep(result)
        folder.update_run(status="finished", finished_at=_now())
        return self.trials

    def _problem(self, config: dict[str, Any]) -> str | None:
        try:
            self.cls.config_class.model_validate(config)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return f"not a valid {self.cls.kind} config: {where}: {first['msg']}"
        return self.cls.tuning_problem(config, self.tuner.machine)

    def _judge(
        self,
        folder: RunFolder,
        name: str,
        trial: Any,
        params: dict[str, Any],
        config: dict[str, Any],
        started: str,
        seconds: float,
        probes: list[float],
    ) -> TrialResult:
        data = load_run(folder.path)
        entry = next((t for t in data.targets if t.get("name") == name), {})
        search = entry.get("search")
        found: dict[str, Any] = search if isinstance(search, dict) else {}
        probe = probes[0] if probes else None
        stack = self.space.target
        if entry.get("status") != "ok":
            reason = str(entry.get("error") or entry.get("status") or "did not finish")
            return TrialResult(
                stack,
                trial.number,
                "failed",
                None,
                probe,
                params,
                config,
                seconds,
                started,
                reason.splitlines()[0],
                name,
            )
        if found.get("pruned"):
            return TrialResult(
                stack,
                trial.number,
                "pruned",
                None,
                probe,
                params,
                config,
                seconds,
                started,
                "clearly worse after the probe",
                name,
            )
        rows = data.steps[data.steps["target"] == name]
        if self.spec.search.probe_s:
            rows = rows[rows["step"] >= 1]  # step 0 was the probe
        family = self.tuner.workload
        value, why = objective_value(
            rows, self.spec.objective.kind, self.tuner.scenario.slo, family
        )
        state = "complete" if value is not None else "failed"
        return TrialResult(
            stack, trial.number, state, value, probe, params, config, seconds, started, why, name
        )

    def _keep(self, result: TrialResult) -> None:
        self.trials.append(result)
        self.tuner.folder.append_trial(result.row())
        value = "" if result.value is None else f" = {result.value:.4g}"
        self.tuner.observer.on_phase(
            f"{result.stack}: trial {result.trial} {result.state}"
            f"{value}{f' ({result.reason})' if result.reason else ''}"
        )


def _tell(study: Any, trial: Any, *args: Any, **kwargs: Any) -> None:
    """`study.tell`, where GridSampler's own `study.stop()` on its last combination (meant
    for `study.optimize`) is no error: the trial is stored before it; we stop ourselves."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def best_of(trials: list[TrialResult], maximise: bool) -> TrialResult | None:
    done = [t for t in trials if t.state == "complete" and t.value is not None]
    if not done:
        return None
    pick = max if maximise else min
    return pick(done, key=lambda t: t.value if t.value is not None else 0.0)


class _Tuner:
    def __init__(
        self,
        scenario: Scenario,
        folder: RunFolder,
        observer: Observer,
        scenario_file: str,
        command: list[str],
    ) -> None:
        self.scenario, self.folder, self.observer = scenario, folder, observer
        self.scenario_file, self.command = scenario_file, command
        self.machine = Machine.here(scenario.resources.server_cpus)
        self.workload = registry.workload_of(scenario.model.name).name  # type: ignore[attr-defined]
        self.provenance = collect(scenario.seed)


def tune_scenario(
    scenario: Scenario,
    *,
    scenario_file: str = "",
    out_root: Path = Path("results"),
    budget_s: float | None = None,
    stacks: list[str] | None = None,
    observer: Observer | None = None,
    command: list[str] | None = None,
    remeasure: bool = True,
) -> TuneOutcome:
    """Search each stack of `scenario.tune` (or those named in `stacks`), keep every trial
    in the run folder, then re-measure the hand-set and best configurations side by side.
    `budget_s`: the whole search's time, shared out evenly (default: tune.budget_s each)."""
    spec = scenario.tune
    if spec is None:
        raise ConfigError(
            scenario_file or "scenario",
            [
                (
                    "tune",
                    "missing: a tuning run needs a `tune:` section "
                    "(objective, search, budget_s, stacks)",
                )
            ],
        )
    chosen = [s for s in spec.stacks if not stacks or s.target in stacks]
    unknown = sorted(set(stacks or []) - {s.target for s in spec.stacks})
    if unknown:
        raise ConfigError(
            "--stacks",
            [
                (
                    n,
                    "not a stack of tune.stacks (stacks: "
                    + ", ".join(s.target for s in spec.stacks)
                    + ")",
                )
                for n in unknown
            ],
        )
    observer = observer or Observer()
    per_stack = budget_s / len(chosen) if budget_s else spec.budget_s
    folder = RunFolder.create(out_root, new_run_id(scenario.name))
    tuner = _Tuner(scenario, folder, observer, scenario_file, list(command or []))
    folder.write_run(
        _run_info(
            scenario,
            folder,
            scenario_file,
            tuner.workload,
            tuner.command,
            tuner.provenance,
            "tuning",
        )
    )
    indices = [spec.stacks.index(s) for s in chosen]
    spaces = {spec.stacks[i].target: stack_space(scenario, i, tuner.machine) for i in indices}
    info: dict[str, Any] = {
        "objective": spec.objective.model_dump(mode="json"),
        "search": spec.search.model_dump(mode="json"),
        "budget_s_per_stack": per_stack,
        "repeats": spec.repeats,
        "machine": dataclasses.asdict(tuner.machine),
        "maximise": maximises(scenario),
        "stacks": {
            name: {
                "adapter": sp.adapter,
                "space": sp.describe(),
                "hand": sp.hand,
                "notes": sp.notes,
                "grid_size": sp.grid_size(),
            }
            for name, sp in spaces.items()
        },
        "bests": {},
        "search_s": {},
        "status": "searching",
    }
    folder.write_tune(info)
    outcome = TuneOutcome(folder.path, "failed")
    try:
        with _load_backend(scenario) as load:
            for index in indices:
                space = spaces[spec.stacks[index].target]
                began = time.monotonic()
                trials = _StackSearch(tuner, index, space).run(load, per_stack)
                outcome.search_s[space.target] = time.monotonic() - began
                outcome.trials += trials
                best = best_of(trials, maximises(scenario))
                if best is not None:
                    outcome.bests[space.target] = best
                info["bests"] = {k: v.row() for k, v in outcome.bests.items()}
                info["search_s"] = {k: round(v, 1) for k, v in outcome.search_s.items()}
                folder.write_tune(info)
        if remeasure:
            info["status"] = "re-measuring"
            folder.write_tune(info)
            final = _final_scenario(
                scenario, [spec.stacks[i].target for i in indices], outcome.bests
            )
            ran: RunOutcome = run_scenario(
                final,
                scenario_file=scenario_file,
                out_root=out_root,
                observer=observer,
                command=command,
                folder=folder,
                extra={"kind": "tune"},
            )
            outcome.status, outcome.failures = ran.status, ran.failures
        else:
            outcome.status = "finished"
            folder.update_run(status="finished", finished_at=_now())
        info["status"] = "finished"
    except KeyboardInterrupt:
        info["status"] = outcome.status = "interrupted"
        folder.update_run(status="interrupted", finished_at=_now())
        raise
    finally:
        folder.write_tune(info)
    return outcome


def _final_scenario(
    scenario: Scenario, stacks: list[str], bests: dict[str, TrialResult]
) -> Scenario:
    """The re-measure: each stack's hand-set target and its best (`X.tuned`), repeated."""
    assert scenario.tune is not None
    data = scenario.model_dump(mode="json")
    targets = {t["name"]: t for t in data["targets"]}
    chosen: list[dict[str, Any]] = []
    for name in stacks:
        chosen.append(targets[name])
        if name in bests:
            chosen.append(
                {**targets[name], "name": f"{name}{TUNED_SUFFIX}", "adapter": bests[name].config}
            )
    data["targets"] = chosen
    data["repeats"] = scenario.tune.repeats
    data["tune"]["stacks"] = [s for s in data["tune"]["stacks"] if s["target"] in stacks]
    objective = scenario.tune.objective
    if objective.kind == "min_latency" and objective.rate is not None:
        load = dict(data["load"])
        load["profile"] = {
            "kind": "open",
            "rates": [objective.rate],
            "arrival": load.get("profile", {}).get("arrival", "poisson"),
        }
        data["load"] = load
    return scenario_model().model_validate(data)
