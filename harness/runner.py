"""The one place where a target's parts are joined: adapter + variant + launcher + load.

scenario -> model -> variants (cached, validated) -> for each target: launch -> ready ->
fidelity -> warm-up -> steps -> teardown. Each finished step is on disk before the next one
starts; a failing target is recorded and the others still run; the server is torn down on
every exit path (errors, Ctrl-C).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import registry
from harness.adapter import Adapter, Server
from harness.calibration import calibrate
from harness.errors import ConfigError, ServingBenchError, UnavailableError
from harness.fidelity import FidelityResult, check_fidelity
from harness.launchers.base import LaunchRequest
from harness.llm.adapter import LlmAdapter
from harness.llm.fidelity import check_generation
from harness.llm.metrics import llm_summary
from harness.llm.variants import build_llm_variant, checks
from harness.llm.workload import GenRequest, WorkloadSpec, make_requests
from harness.load.backend import LoadBackend
from harness.load.endpoints import Endpoint
from harness.load.engine import StepPlan
from harness.load.fanout import LoadGroup
from harness.models import LlmBundle, ModelBundle, build_model
from harness.observer import Observer
from harness.profiles import levels, plans, warmup_plan
from harness.provenance import collect
from harness.results import RunFolder, new_run_id
from harness.runtime import thread_count
from harness.scenario import Scenario, target_by_name
from harness.stats import StatsRules, StepSummary, summarize
from harness.summary import write_summary
from harness.telemetry import (
    GpuSampler,
    ProcessTreeSampler,
    Sampler,
    gpu_inventory,
    start_all,
    stop_all,
)
from harness.variants import BuiltVariant, build_variant
from harness.verdicts import write_verdicts


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    failures: list[str] = field(default_factory=list)


def run_scenario(
    scenario: Scenario,
    *,
    scenario_file: str = "",
    out_root: Path = Path("results"),
    target_names: list[str] | None = None,
    observer: Observer | None = None,
    command: list[str] | None = None,
) -> RunOutcome:
    targets = target_by_name(scenario, target_names or [])
    folder = RunFolder.create(out_root, new_run_id(scenario.name))
    run = _Run(scenario, folder, observer or Observer())
    folder.write(
        "run.json",
        {
            "run_id": folder.path.name,
            "scenario_name": scenario.name,
            "scenario_file": scenario_file,
            "scenario": scenario.model_dump(mode="json"),
            "command": command or [],
            "started_at": _now(),
            "finished_at": None,
            "status": "running",
            "failures": [],
            "provenance": collect(scenario.seed),
        },
    )
    status = "failed"
    try:
        run.check_gpus()
        run.prepare([t.variant for t in targets])
        with _load_backend(scenario) as load:
            run.calibrate(load)
            for repeat in range(scenario.repeats):
                for index, target in enumerate(targets):
                    run.run_target(target, load, repeat, index, len(targets))
        run.conclude()
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except ServingBenchError as exc:
        run.failures.append(f"run: {exc}")
        raise
    finally:
        info = folder.read("run.json")
        info.update(status=status, finished_at=_now(), failures=run.failures)
        folder.write("run.json", info)
    return RunOutcome(folder.path, status, run.failures)


def _load_backend(scenario: Scenario) -> LoadBackend:
    """Our engine (default) or Locust; both take a plan and give back request records."""
    load = scenario.load
    if load.backend == "locust":
        from harness.load.locust_backend import LocustLoad

        return LocustLoad(load.locust_workers, scenario.resources.client_cpus)  # type: ignore[no-any-return,unused-ignore]
    return LoadGroup(load.processes, scenario.resources.client_cpus)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Run:
    def __init__(self, scenario: Scenario, folder: RunFolder, observer: Observer) -> None:
        self.scenario = scenario
        self.folder = folder
        self.observer = observer
        self.failures: list[str] = []
        self.variants: dict[str, BuiltVariant] = {}
        self.variant_errors: dict[str, str] = {}
        self.bundle: ModelBundle | LlmBundle | None = None
        self.generations: list[GenRequest] = []  # LLM models: the workload's requests
        self.workload = scenario.workload or WorkloadSpec()  # LLM models: its default
        self.gpu_available = False
        cpus = scenario.resources.server_cpus
        self.threads = len(cpus) if cpus else thread_count()

    def check_gpus(self) -> None:
        """Find the GPUs once; without a driver say "no GPU" once and go on."""
        gpus, reason = gpu_inventory()
        self.gpu_available = bool(gpus)
        info = self.folder.read("run.json")
        info["provenance"]["hardware"]["gpus"] = gpus
        info["provenance"]["hardware"]["gpu_note"] = reason
        self.folder.write("run.json", info)
        if not gpus and self.scenario.telemetry.gpu:
            self.observer.on_phase(f"GPU telemetry off: {reason}")

    def prepare(self, variant_names: list[str]) -> None:
        self.observer.on_phase(f"building model {self.scenario.model.name}")  # type: ignore[attr-defined]
        self.bundle = build_model(self.scenario.model)  # type: ignore[attr-defined]
        self.folder.write(
            "model.json",
            {
                **self.bundle.meta,
                "name": self.bundle.name,
                "key": self.bundle.key,
                "path": str(self.bundle.path),
            },
        )
        if isinstance(self.bundle, LlmBundle):
            self._make_workload(self.bundle)
        builder = build_llm_variant if isinstance(self.bundle, LlmBundle) else build_variant
        for name in dict.fromkeys(variant_names):
            self.observer.on_phase(f"building variant {name}")
            try:
                self.variants[name] = builder(name, self.bundle, self.scenario.variants)  # type: ignore[arg-type]
            except Exception as exc:  # a broken build fails its targets, not the run
                self.variant_errors[name] = f"{type(exc).__name__}: {exc}"
        self.folder.write(
            "variants.json",
            [v.to_dict() for v in self.variants.values()]
            + [
                {"name": n, "status": "failed", "validation": {"status": "failed", "reason": e}}
                for n, e in self.variant_errors.items()
            ],
        )

    def _make_workload(self, bundle: LlmBundle) -> None:
        spec = self.workload
        context = bundle.config.context_length if bundle.config else 2048
        try:
            self.generations = make_requests(spec, bundle.tokenizer(), self.scenario.seed, context)
        except ValueError as exc:
            raise ConfigError("scenario", [("workload", str(exc))]) from exc
        lengths = [r.prompt_len for r in self.generations if r.prompt_len is not None]
        self.folder.write(
            "workload.json",
            {
                **spec.model_dump(mode="json"),
                "requests": len(self.generations),
                "prompt_tokens_mean": sum(lengths) / len(lengths) if lengths else None,
                "output_tokens_mean": sum(r.max_tokens for r in self.generations)
                / len(self.generations),
            },
        )

    def run_target(
        self, target: Any, load: LoadBackend, repeat: int, index: int, total: int
    ) -> None:
        name = target.name
        adapter = registry.adapters()[target.adapter.kind](target.adapter)
        launcher = registry.launchers()[target.launcher.kind](target.launcher)
        self.observer.on_target_start(name, index, total)
        self.folder.update_target(
            name,
            {
                "adapter": adapter.kind,
                "variant": target.variant,
                "launcher": launcher.kind,
                "settings": adapter.settings(),
                "baseline": adapter.baseline,
                "status": "running",
                "error": None,
                "startup_s": None,
                "fidelity": None,
                "log": f"logs/{name}.log",
                "repeat": repeat,
            },
        )
        server: Server | None = None
        available = adapter.availability()
        if not available.available:
            # Not installed here (vLLM is opt-in): a skip with its reason, not a failure.
            reason = f"adapter {adapter.kind} is not available here: {available.reason}"
            self._finish_target(name, "unavailable", reason)
            return
        try:
            variant = self._usable_variant(adapter, target.variant)
            server = launcher.start(
                LaunchRequest(
                    target=name,
                    adapter=adapter,
                    variant=variant,
                    workdir=self.folder.path / "work" / name,
                    log_path=self.folder.log_path(name),
                    server_cpus=self.scenario.resources.server_cpus,
                    threads=self.threads,
                    startup_timeout_s=target.startup_timeout_s,
                )
            )
            self.folder.update_target(
                name,
                {
                    "startup_s": server.startup_s,
                    "pid": server.pid,
                    "ports": server.ports,
                    "url": server.base_url,
                },
            )
            if "container" in server.info:  # image id and digests: what exactly ran
                self.folder.update_target(name, {"container": server.info["container"]})
            self._check_fidelity(name, adapter, server, variant)
            self._load_steps(target, adapter, server, variant, load, repeat)
            self._finish_target(name, "ok", None)
        except ServingBenchError as exc:
            self._finish_target(name, "failed", str(exc))
        except Exception as exc:  # an adapter bug: keep going with the others, loudly
            self._finish_target(
                name, "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
            )
        finally:
            if server is not None:
                launcher.stop(server)

    def _samplers(self, server: Server) -> list[Sampler]:
        spec = self.scenario.telemetry
        samplers: list[Sampler] = []
        if spec.process and server.pid is not None:
            samplers.append(ProcessTreeSampler(server.pid, spec.interval_s))
        if spec.gpu and self.gpu_available:
            samplers.append(GpuSampler(spec.interval_s))
        return samplers

    def calibrate(self, load: LoadBackend) -> None:
        """The load generator's own overhead against a null server, into run.json."""
        if not self.scenario.load.calibrate:
            return
        self.observer.on_phase("calibrating the load generator against a null server")
        rates = [lv.rate for lv in levels(self.scenario.load.profile) if lv.mode == "open"]
        figures = calibrate(load, self.scenario.resources.server_cpus, 2 * max(rates or [500]))
        info = self.folder.read("run.json")
        info["calibration"] = figures
        self.folder.write("run.json", info)

    def conclude(self) -> None:
        """Pairwise verdicts between the targets that ran and answered correctly."""
        if not (self.folder.path / "steps.csv").exists():
            return
        self.observer.on_phase("computing verdicts")
        trusted = {
            t["name"]
            for t in self.folder.read("targets.json")
            if t.get("status") == "ok" and (t.get("fidelity") or {}).get("passed")
        }
        write_verdicts(self.folder.path, trusted, self.scenario.verdicts.margin)
        write_summary(self.folder.path)

    def _finish_target(self, name: str, status: str, error: str | None) -> None:
        if status not in ("ok", "unavailable"):
            self.failures.append(f"{name}: {(error or status).splitlines()[0]}")
        self.folder.update_target(name, {"status": status, "error": error})
        self.observer.on_target_end(name, status, error)

    def _usable_variant(self, adapter: Adapter[Any], name: str) -> BuiltVariant:
        available = adapter.availability()
        if not available.available:
            raise UnavailableError(
                f"adapter {adapter.kind} is not available here: {available.reason}"
            )
        if not adapter.supports(name):
            raise UnavailableError(
                f"adapter {adapter.kind} does not serve variant {name} "
                f"(it serves: {', '.join(sorted(adapter.variants))})"
            )
        if name in self.variant_errors:
            raise ServingBenchError(
                f"variant {name} could not be built: {self.variant_errors[name]}"
            )
        variant = self.variants[name]
        if not variant.ok:
            raise ServingBenchError(
                f"variant {name} failed validation: {variant.validation.reason}"
            )
        return variant

    def _check_fidelity(
        self, name: str, adapter: Adapter[Any], server: Server, variant: BuiltVariant
    ) -> None:
        assert self.bundle is not None
        spec = self.scenario.fidelity
        if isinstance(self.bundle, LlmBundle):
            assert isinstance(adapter, LlmAdapter)
            api = self.workload.api
            result = check_generation(
                adapter.openai_client(server, api),
                checks(variant),
                self.generations,
                spec.samples,
                spec.llm_min_agreement,
            )
            self._record_fidelity(name, result)
            return
        count = min(spec.samples, len(self.bundle.x_test))
        result = check_fidelity(
            lambda batch: adapter.infer(server, variant, batch),
            self.bundle.x_test[:count],
            variant.outputs_test()[:count],
            spec.atol,
            spec.rtol,
            spec.min_agreement,
        )
        self._record_fidelity(name, result)

    def _record_fidelity(self, name: str, result: FidelityResult) -> None:
        self.folder.update_target(name, {"fidelity": result.to_dict()})
        if not result.passed:
            self.failures.append(f"{name}: fidelity check failed: {result.message}")
            self.observer.on_phase(f"{name}: FIDELITY FAILED: {result.message}")

    def _load_steps(
        self,
        target: Any,
        adapter: Adapter[Any],
        server: Server,
        variant: BuiltVariant,
        load: LoadBackend,
        repeat: int,
    ) -> None:
        assert self.bundle is not None
        endpoint: Endpoint
        if isinstance(self.bundle, LlmBundle):
            assert isinstance(adapter, LlmAdapter)
            api = self.workload.api
            endpoint = adapter.openai_client(server, api).endpoint(self.generations)
        else:
            count = min(self.scenario.dataset.samples, len(self.bundle.x_test))
            endpoint = adapter.endpoint(server, variant, self.bundle.x_test[:count])
        live = _Live(target, adapter, server, endpoint)
        seed = self.scenario.seed + 1000 * repeat
        warm = warmup_plan(self.scenario.load, seed)
        if warm is not None:
            self.observer.on_phase(f"{target.name}: warm-up {warm.duration_s:g} s")
            load.run(live.endpoint, warm)
        gen = plans(self.scenario.load, seed, self.scenario.slo)
        summary: StepSummary | None = None
        step = 0
        while True:
            try:
                plan = gen.send(summary) if step else next(gen)
            except StopIteration as done:
                if done.value:  # what the profile found (an SLO search's rate and bracket)
                    self.folder.update_target(target.name, {"search": done.value})
                return
            summary = self._one_step(live, plan, load, step, repeat)
            step += 1

    def _one_step(
        self, live: _Live, plan: StepPlan, load: LoadBackend, step: int, repeat: int
    ) -> StepSummary:
        target, adapter = live.target, live.adapter
        self.observer.on_step_start(target.name, plan)
        started = _now()
        before = adapter.server_metrics(live.server)
        samplers = self._samplers(live.server)
        start_all(samplers)
        try:
            records = load.run(live.endpoint, plan)
        finally:
            frames = stop_all(samplers)
        after = adapter.server_metrics(live.server)
        in_process = live.server.base_url is None
        stability = self.scenario.load.stability
        rules = StatsRules(stability.window_s, stability.windows, stability.tolerance,
                           stability.percentile)  # fmt: skip
        summary = summarize(records, self.scenario.slo.latency_ms, in_process, rules,
                            self.scenario.slo.percentile)  # fmt: skip
        self.folder.write_records(target.name, step, repeat, records)
        self.folder.write_telemetry(target.name, step, repeat, frames)
        slo = self.scenario.slo
        tokens = llm_summary(records, summary.duration_s, slo.ttft_ms, slo.tpot_ms)
        measured = {k: v for s in samplers if s.name in frames
                    for k, v in s.summary(frames[s.name], summary.requests,
                                          summary.duration_s).items()}  # fmt: skip
        if tokens and measured.get("gpu_energy_j"):
            generated = tokens["output_tokens_per_s"] * summary.duration_s
            if generated > 0:
                measured["energy_per_output_token_mj"] = 1000 * measured["gpu_energy_j"] / generated
        self.folder.append_step(
            {
                **summary.to_dict(),
                **tokens,
                **adapter.breakdown(before, after, len(records)),
                **measured,
                "target": target.name,
                "adapter": target.adapter.kind,
                "variant": target.variant,
                "launcher": target.launcher.kind,
                "profile": self.scenario.load.profile.kind,
                "level": plan.level,
                "step": step,
                "repeat": repeat,
                "label": plan.label,
                "mode": plan.mode,
                "requested_rate": plan.rate if plan.mode == "open" else None,
                "concurrency": plan.concurrency if plan.mode == "closed" else None,
                "slo_ms": self.scenario.slo.latency_ms,
                "connections": records.connections,
                "started_at": started,
            }
        )
        self.observer.on_step_end(target.name, plan, summary, tokens or None)
        return summary


@dataclass(frozen=True)
class _Live:
    """A target while its server is up: what each step needs."""

    target: Any
    adapter: Adapter[Any]
    server: Server
    endpoint: Endpoint
