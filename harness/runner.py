"""The one place where a target's parts are joined: adapter + variant + launcher + load.

scenario -> model -> variants (cached, validated) -> for each target: launch -> ready ->
fidelity -> warm-up -> steps -> teardown. Each finished step is on disk before the next one
starts; a failing target is recorded and the others still run; the server is torn down on
every exit path (errors, Ctrl-C).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import bounds, environments, registry
from harness.adapter import Adapter, Server
from harness.calibration import calibrate
from harness.errors import ServingBenchError, UnavailableError
from harness.fidelity import FidelityResult
from harness.launchers.base import Launcher, LaunchRequest, tail
from harness.load.backend import LoadBackend
from harness.load.endpoints import Endpoint
from harness.load.fanout import LoadGroup
from harness.load.plan import StepPlan
from harness.observer import Observer
from harness.profiles import PlanGenerator, levels, plans, warmup_plan
from harness.prometheus import page_url
from harness.provenance import collect
from harness.results import RunFolder, mark_aborted, new_run_id, owner
from harness.runtime import thread_count
from harness.scenario import Scenario, target_by_name
from harness.stats import StatsRules, StepSummary, summarize
from harness.summary import write_summary
from harness.telemetry import (
    GpuSampler,
    ProcessTreeSampler,
    Sampler,
    ServerSeriesSampler,
    gpu_inventory,
    start_all,
    stop_all,
)
from harness.variants import BuiltVariant
from harness.verdicts import write_verdicts
from harness.workloads.base import Workload


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
    folder: RunFolder | None = None,
    extra: dict[str, Any] | None = None,
    cluster: Any = None,
) -> RunOutcome:
    """Run a scenario into a new run folder under `out_root` (or into `folder`, made by the
    caller: a tuning run re-measures its bests in its own); `extra` goes into run.json.
    With `cluster` (harness/cluster/connect.py), each target runs on a node of that Ray
    cluster, as many at once as there are free nodes, into this one run folder."""
    targets = target_by_name(scenario, target_names or [])
    observer = observer or Observer()
    warnings = bounds.check(scenario, scenario_file or "scenario")  # refuses the impossible
    for warning in warnings:
        observer.on_phase(f"warning: {warning}")
    for stale in mark_aborted(out_root):  # runs whose servingbench was killed
        observer.on_phase(f"marked aborted: {stale} (its servingbench process is gone)")
    folder = folder or RunFolder.create(out_root, new_run_id(scenario.name))
    run = _Run(scenario, folder, observer)
    folder.write_run(
        {
            **(extra or {}),
            "run_id": folder.path.name,
            "scenario_name": scenario.name,
            "scenario_file": scenario_file,
            "workload": run.workload.name,
            "scenario": scenario.model_dump(mode="json"),
            "command": command or [],
            "started_at": _now(),
            "finished_at": None,
            "status": "running",
            "failures": [],
            "owner": owner(),
            "warnings": warnings,
            "provenance": collect(scenario.seed),
        },
    )
    status = "failed"
    try:
        run.check_gpus()
        with run.environments_beside(targets), run.timed("model and variants"):
            run.prepare([t.variant for t in targets])
        if cluster is not None:
            from harness.cluster.driver import run_on_cluster

            # no calibration here: the load runs on the nodes, not on this machine
            with run.timed("targets on the cluster"):
                run_on_cluster(run, targets, cluster)
        else:
            with _load_backend(scenario) as load:
                with run.timed("calibration"):
                    run.calibrate(load)
                for repeat in range(scenario.repeats):
                    for index, target in enumerate(targets):
                        with run.timed(f"target {target.name}"):
                            run.run_target(target, load, repeat, index, len(targets))
        with run.timed("verdicts"):
            run.conclude()
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except (ServingBenchError, OSError) as exc:  # OSError: a full disk, a vanished folder
        run.failures.append(f"run: {exc}")
        raise
    finally:
        run.close(status)
    return RunOutcome(folder.path, status, run.failures)


def _load_backend(scenario: Scenario) -> LoadBackend:
    """Our engine (default) or Locust; both take a plan and give back request records."""
    load = scenario.load
    if load.nodes > 1:  # on a Ray node of a --ray run: its load spans its placement group
        from harness.cluster.load import ClusterLoad

        return ClusterLoad(load.processes, load.nodes, scenario.resources.client_cpus)
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
        # the model's family: its requests, fidelity and step figures (harness/workloads)
        self.workload: Workload = registry.workload_of(scenario.model.name)(scenario)  # type: ignore[attr-defined]
        self.gpu_available = False
        self.env_errors: dict[str, str] = {}  # an adapter environment's key -> why it failed
        # where the run's time went (seconds), into run.json and the terminal's last line
        self.timings: dict[str, float] = {}
        cpus = scenario.resources.server_cpus
        self.threads = len(cpus) if cpus else thread_count()
        # where each target's step plans come from: the scenario's profile (a tuner wraps
        # it in a short probe that may end a clearly worse trial early)
        self.plan_source: Callable[..., PlanGenerator] = plans

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add_time(key, time.perf_counter() - began)

    def add_time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    @contextlib.contextmanager
    def environments_beside(self, targets: list[Any]) -> Iterator[None]:
        """Create the adapters' own environments (the first time: installs, a minute or
        more each) two at a time while the model and variants build, and wait for them
        before anything is measured: no install ever runs beside a step."""
        needed = self._environments(targets)
        if not needed:
            yield
            return
        began = time.perf_counter()
        tool = environments.installer()
        for env, names in needed:
            self.observer.on_phase(
                f"creating the {env.name} environment once, for {', '.join(names)} ({tool}, "
                f"{environments.expected(env, tool)}; log: {env.path.with_suffix('.log')})"
            )
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="environment")
        futures: list[tuple[Any, Future[Any]]] = [
            (env, pool.submit(environments.ensure, env)) for env, _ in needed
        ]
        try:
            yield
        except BaseException:
            environments.stop_installs()  # Ctrl-C or a failed build: no install goes on
            raise
        finally:
            for env, future in futures:
                try:
                    future.result()
                except Exception as exc:  # its targets fail with this; the others run
                    self.env_errors[env.key] = str(exc)
                    self.observer.on_phase(f"the {env.name} environment failed: {exc}")
            pool.shutdown()
            self.add_time("environments", time.perf_counter() - began)

    def _environments(self, targets: list[Any]) -> list[tuple[Any, list[str]]]:
        """The environments not yet created that these targets' servers run in, each with
        the targets that need it (a container brings its own; an unavailable adapter is
        skipped with its reason later)."""
        needed: dict[str, tuple[Any, list[str]]] = {}
        for target in targets:
            if target.launcher.kind != "process":
                continue
            adapter = registry.adapters()[target.adapter.kind](target.adapter)
            adapter.workload = self.workload.name
            env = adapter.own_environment()
            if env is None or env.ready or not adapter.availability().available:
                continue
            needed.setdefault(env.key, (env, []))[1].append(target.name)
        return list(needed.values())

    def check_gpus(self) -> None:
        """Find the GPUs once; without a driver say "no GPU" once and go on."""
        gpus, reason = gpu_inventory()
        self.gpu_available = bool(gpus)
        info = self.folder.read_run()
        info["provenance"]["hardware"]["gpus"] = gpus
        info["provenance"]["hardware"]["gpu_note"] = reason
        self.folder.write_run(info)
        if not gpus and self.scenario.telemetry.gpu:
            self.observer.on_phase(f"GPU telemetry off: {reason}")

    def prepare(self, variant_names: list[str]) -> None:
        self.observer.on_phase(f"building model {self.scenario.model.name}")  # type: ignore[attr-defined]
        bundle = self.workload.build_model()
        self.folder.write_model(
            {**bundle.meta, "name": bundle.name, "key": bundle.key, "path": str(bundle.path)}
        )
        self.workload.prepare(self.folder)
        for name in dict.fromkeys(variant_names):
            self.observer.on_phase(f"building variant {name}")
            try:
                self.variants[name] = self.workload.build_variant(name)
            except Exception as exc:  # a broken build fails its targets, not the run
                self.variant_errors[name] = f"{type(exc).__name__}: {exc}"
        self.folder.write_variants(
            [v.to_dict() for v in self.variants.values()]
            + [
                {"name": n, "status": "failed", "validation": {"status": "failed", "reason": e}}
                for n, e in self.variant_errors.items()
            ],
        )

    def _stack(self, adapter: Any, server: Any) -> dict[str, str]:
        """The served stack's versions (a container's packages are its image's: the digest
        above names them; these are what the adapter found on the host)."""
        try:
            return dict(adapter.stack_versions(server))
        except Exception as exc:  # provenance never fails a target
            return {"error": f"{type(exc).__name__}: {exc}"}

    def run_target(
        self, target: Any, load: LoadBackend, repeat: int, index: int, total: int
    ) -> None:
        name = target.name
        adapter = registry.adapters()[target.adapter.kind](target.adapter)
        adapter.workload = self.workload.name
        adapter.use(self.workload.server_settings())
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
                # what every target gets alike: its CPU set and the threads it may use
                "server_cpus": self.scenario.resources.server_cpus,
                "threads": self.threads,
            },
        )
        server: Server | None = None
        available = adapter.availability()
        if not available.available:
            # Not installed here (vLLM is opt-in): a skip with its reason, not a failure.
            reason = f"adapter {adapter.kind} is not available here: {available.reason}"
            self._finish_target(name, "unavailable", reason)
            return
        own = adapter.own_environment()
        if own is not None and target.launcher.kind == "process" and own.key in self.env_errors:
            self._finish_target(name, "failed", self.env_errors[own.key])
            return
        try:
            variant = self._usable_variant(adapter, target.variant)
            server = launcher.start(
                LaunchRequest(
                    target=name,
                    adapter=adapter,
                    variant=variant,
                    workdir=self.folder.work_dir(name),
                    log_path=self.folder.log_path(name),
                    server_cpus=self.scenario.resources.server_cpus,
                    threads=self.threads,
                    startup_timeout_s=target.startup_timeout_s,
                    run_id=self.folder.path.name,
                )
            )
            self.folder.update_target(
                name,
                {
                    "startup_s": server.startup_s,
                    "pid": server.pid,
                    "ports": server.ports,
                    "url": server.base_url,
                    "threads": server.info.get("threads", self.threads),
                },
            )
            if "container" in server.info:  # image id and digests: what exactly ran
                self.folder.update_target(name, {"container": server.info["container"]})
            self.folder.update_target(name, {"stack": self._stack(adapter, server)})
            first = self.workload.check_fidelity(adapter, server)
            self._record_fidelity(name, first)
            self._load_steps(target, adapter, launcher, server, load, repeat)
            if first.passed:  # the same check again: a server that went bad is flagged
                self._record_fidelity(name, self.workload.check_fidelity(adapter, server), True)
            self._finish_target(name, "ok", None)
        except KeyboardInterrupt:
            self._finish_target(name, "interrupted", "interrupted (Ctrl-C or SIGTERM)")
            raise
        except ServingBenchError as exc:
            self._finish_target(name, "failed", str(exc))
        except OSError as exc:  # the run folder cannot be written (a full disk): the run ends
            self._finish_target(name, "failed", f"{type(exc).__name__}: {exc}")
            raise
        except Exception as exc:  # an adapter bug: keep going with the others, loudly
            self._finish_target(
                name, "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
            )
        finally:
            if server is not None:
                launcher.stop(server)

    def _samplers(self, server: Server, adapter: Adapter[Any]) -> list[Sampler]:
        spec = self.scenario.telemetry
        samplers: list[Sampler] = []
        if spec.process and server.pid is not None:
            samplers.append(ProcessTreeSampler(server.pid, spec.interval_s))
        if spec.gpu and self.gpu_available:
            samplers.append(GpuSampler(spec.interval_s))
        page = adapter.metrics_page(server) if spec.server else None
        url = page_url(server, page) if page is not None and page.series else None
        if page is not None and url is not None:
            samplers.append(ServerSeriesSampler(url, page, spec.server_interval_s))
        return samplers

    def calibrate(self, load: LoadBackend) -> None:
        """The load generator's own overhead against a null server, into run.json."""
        if not self.scenario.load.calibrate:
            return
        self.observer.on_phase("calibrating the load generator against a null server")
        rates = [lv.rate for lv in levels(self.scenario.load.profile) if lv.mode == "open"]
        figures = calibrate(load, self.scenario.resources.server_cpus, 2 * max(rates or [500]))
        self.folder.update_run(calibration=figures)

    def conclude(self) -> None:
        """Pairwise verdicts between the targets that ran and answered correctly."""
        if not self.folder.has_steps:
            return
        self.observer.on_phase("computing verdicts")
        write_verdicts(self.folder.path, margin=self.scenario.verdicts.margin)

    def close(self, status: str) -> None:
        """The run's final status, then (when it ended on its own) the summary, which reads
        it. A disk too full to take run.json leaves it "running": the next run, finding its
        owner gone, marks it aborted."""
        timings = {k: round(v, 1) for k, v in self.timings.items()}
        try:
            self.folder.update_run(status=status, finished_at=_now(), failures=self.failures,
                                   timings=timings)  # fmt: skip
        except OSError:
            return
        if status == "finished" and self.folder.has_steps:
            write_summary(self.folder.path)

    def _finish_target(self, name: str, status: str, error: str | None) -> None:
        if status not in ("ok", "unavailable", "interrupted"):
            self.failures.append(f"{name}: {(error or status).splitlines()[0]}")
        with contextlib.suppress(OSError):  # a full disk: the failure is still reported
            self.folder.update_target(name, {"status": status, "error": error})
        self.observer.on_target_end(name, status, error)

    def _usable_variant(self, adapter: Adapter[Any], name: str) -> BuiltVariant:
        available = adapter.availability()
        if not available.available:
            raise UnavailableError(
                f"adapter {adapter.kind} is not available here: {available.reason}"
            )
        if self.workload.name not in adapter.workloads:
            raise UnavailableError(
                f"adapter {adapter.kind} does not serve {self.workload.name} workloads "
                f"(it serves: {', '.join(sorted(adapter.workloads))})"
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

    def _record_fidelity(self, name: str, result: FidelityResult, after: bool = False) -> None:
        """Before the load: `fidelity`. After the last step (a server that turned bad
        mid-run): `fidelity_after`, and when it failed, `fidelity` becomes that failure (the
        first check kept as `fidelity_before`), so every reader sees the target as wrong."""
        if not after:
            self.folder.update_target(name, {"fidelity": result.to_dict()})
        elif result.passed:
            self.folder.update_target(name, {"fidelity_after": result.to_dict()})
        else:
            before = next(t for t in self.folder.read_targets() if t["name"] == name)["fidelity"]
            failed = {**result.to_dict(), "message": f"after the last step: {result.message}"}
            self.folder.update_target(
                name, {"fidelity_before": before, "fidelity_after": failed, "fidelity": failed}
            )
        if not result.passed:
            when = " after the last step" if after else ""
            self.failures.append(f"{name}: fidelity check failed{when}: {result.message}")
            self.observer.on_phase(f"{name}: FIDELITY FAILED{when}: {result.message}")

    def _load_steps(
        self,
        target: Any,
        adapter: Adapter[Any],
        launcher: Launcher,
        server: Server,
        load: LoadBackend,
        repeat: int,
    ) -> None:
        endpoint = self.workload.endpoint(adapter, server)
        live = _Live(target, adapter, launcher, server, endpoint)
        seed = self.scenario.seed + 1000 * repeat
        warm = warmup_plan(self.scenario.load, seed)
        if warm is not None:
            self.observer.on_phase(f"{target.name}: warm-up {warm.duration_s:g} s")
            load.run(live.endpoint, warm)
        gen = self.plan_source(self.scenario.load, seed, self.scenario.slo,
                               self.scenario.verdicts)  # fmt: skip
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
        dead = live.launcher.check(live.server)
        if dead is not None:  # it died between steps: no load at a corpse
            raise ServerDied(self._death(target.name, step, dead, _now(), live.server))
        before = adapter.server_metrics(live.server)
        samplers = self._samplers(live.server, adapter)
        start_all(samplers)
        try:
            with _Watch(live.launcher, live.server) as watch:
                records = load.run(live.endpoint, self._with_ids(plan, target.name, step,
                                                                 repeat))  # fmt: skip
        finally:
            frames = stop_all(samplers)
        refused = _refused_at_end(records)
        death = watch.death or ((refused, _now()) if refused else None)
        after = adapter.server_metrics(live.server)
        in_process = live.server.base_url is None
        stability = self.scenario.load.stability
        rules = StatsRules(stability.window_s, stability.windows, stability.tolerance,
                           stability.percentile, self.scenario.slo.max_error_rate)  # fmt: skip
        summary = summarize(records, self.scenario.slo.latency_ms, in_process, rules,
                            self.scenario.slo.percentile)  # fmt: skip
        saturation = records.extra.get("saturation")
        if saturation and summary.eligible:  # it measured a queue that grew without bound
            summary.eligible = False
            summary.ineligible_reason = f"ended early, {saturation}"
        if death is not None:  # what it measured is a dying server: never a result
            note = f"the server died during this step ({death[0]}, at {death[1]})"
            summary.valid, summary.eligible = False, False
            summary.invalid_reason = summary.ineligible_reason = note
        self.folder.write_records(target.name, step, repeat, records)
        self.folder.write_telemetry(target.name, step, repeat, frames)
        measured = {k: v for s in samplers if s.name in frames
                    for k, v in s.summary(frames[s.name], summary.requests,
                                          summary.duration_s).items()}  # fmt: skip
        family = self.workload.step_metrics(records, summary.duration_s, measured)
        row = {
            **summary.to_dict(),
            **family,
            **adapter.breakdown(before, after, len(records)),
            **measured,
            "workload": self.workload.name,
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
            "requested_rate": records.requested_rate if plan.mode == "open" else None,
            "concurrency": plan.concurrency if plan.mode == "closed" else None,
            "slo_ms": self.scenario.slo.latency_ms,
            "max_error_rate": self.scenario.slo.max_error_rate,
            "connections": records.connections,
            "started_at": started,
            "ended_by": records.extra.get("ended_by", ""),
            "samples_needed": records.extra.get("samples_needed"),
        }
        confound = self.workload.judge(row)
        if confound is not None:  # e.g. a prompt cache answered: not what was measured
            summary.eligible = row["eligible"] = False
            summary.ineligible_reason = row["ineligible_reason"] = "; ".join(
                r for r in (summary.ineligible_reason, confound) if r
            )
        self.folder.append_step(row)
        self.observer.on_step_end(target.name, plan, summary, row)
        if death is not None:
            raise ServerDied(self._death(target.name, step, *death, live.server))
        return summary

    def _with_ids(self, plan: StepPlan, target: str, step: int, repeat: int) -> StepPlan:
        if not self.workload.request_ids:
            return plan
        run = self.folder.path.name[:15]  # its start time: ids stay unique across runs
        return dataclasses.replace(plan, id_prefix=f"{run}-{target}-s{step}r{repeat}")

    def _death(self, name: str, step: int, reason: str, when: str, server: Server) -> str:
        """Record a server's death in targets.json; the message for its failure."""
        log = tail(server.log_path) if server.log_path else ""
        self.folder.update_target(
            name, {"death": {"step": step, "at": when, "reason": reason, "log_tail": log}}
        )
        message = f"server died during step {step} ({reason}, at {when}); later steps skipped"
        return message + (f"\n--- last log lines ---\n{log}" if log else "")


@dataclass(frozen=True)
class _Live:
    """A target while its server is up: what each step needs."""

    target: Any
    adapter: Adapter[Any]
    launcher: Launcher
    server: Server
    endpoint: Endpoint


class ServerDied(ServingBenchError):
    """The target's server died while it was being measured."""


class _Watch:
    """Asks the launcher, every `interval_s` while a step runs, whether the server is still
    there; remembers the first answer that it is not, and when (a thread that sleeps)."""

    def __init__(self, launcher: Launcher, server: Server, interval_s: float = 0.25) -> None:
        self.launcher, self.server, self.interval_s = launcher, server, interval_s
        self.death: tuple[str, str] | None = None  # (what happened, when: wall clock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="liveness", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.look()

    def _loop(self) -> None:
        while self.death is None and not self._stop.wait(self.interval_s):
            self.look()

    def look(self) -> None:
        if self.death is None:
            reason = self.launcher.check(self.server)
            if reason is not None:
                self.death = (reason, _now())


# An endpoint that answers nothing but refused connections for this long at the end of a
# step has gone away (the way an external target's death shows).
REFUSED_RUN = 20


def _refused_at_end(records: Any) -> str | None:
    """A run of connection failures that ends the step: the server stopped answering."""
    from harness.load.records import ERR_CONNECT, ERR_CONNECTION

    if len(records) < REFUSED_RUN:
        return None
    last = records.error[records.end_ns.argsort(kind="stable")][-REFUSED_RUN:]
    if ((last == ERR_CONNECT) | (last == ERR_CONNECTION)).all():
        return f"the last {REFUSED_RUN} requests of the step could not reach the server"
    return None
