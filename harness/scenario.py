"""Scenario files: YAML validated by pydantic, with errors that name the file, field and line.

The adapter, launcher and model parts are discriminated unions built from the registries,
so a typo in `kind` fails at load time with the list of known kinds, and each adapter's own
config class (``extra="forbid"``) rejects keys it does not know.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from harness import registry
from harness.config import StrictModel, apply_sets
from harness.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # target names become file names
# What a step can be: a day at most (a longer one is a typo, or a step that never ends);
# the machine's own limits (connections, file descriptors) are harness/bounds.py's.
MAX_STEP_S = 86_400.0
MAX_CONCURRENCY = 1_000_000


class DatasetSpec(StrictModel):
    """Which inputs become request payloads (drawn from the model's held-out split)."""

    split: Literal["test"] = "test"
    samples: PositiveInt = Field(256, description="distinct request payloads cycled by the load")


class VariantsSpec(StrictModel):
    accuracy_tolerance: NonNegativeFloat = Field(
        1.0, description="percentage points of test accuracy a reduced-precision build may lose"
    )
    calibration_samples: PositiveInt = Field(256, description="INT8 static calibration inputs")
    llm_min_agreement: float = Field(
        0.9, ge=0, le=1,
        description="LLM builds: greedy next-token agreement with the f32 reference required",
    )  # fmt: skip
    min_cosine: float = Field(
        0.98, ge=-1, le=1,
        description="sentence encoders' reduced precisions: mean cosine with the fp32 "
        "reference required on the held-out sentences",
    )  # fmt: skip


class FidelitySpec(StrictModel):
    samples: PositiveInt = Field(64, description="test inputs sent before the load")
    atol: PositiveFloat = Field(
        1e-3, description="max abs diff allowed vs the variant's own output"
    )
    rtol: NonNegativeFloat = 1e-3
    min_agreement: float = Field(1.0, ge=0, le=1, description="top-1 agreement required")
    llm_min_agreement: float = Field(
        0.8, ge=0, le=1, description="LLM: greedy next-token agreement with the variant required"
    )
    min_cosine: float = Field(
        0.999, ge=-1, le=1,
        description="sentence encoders: cosine of each answer with the variant's own embedding",
    )  # fmt: skip


Percentiles = list[Annotated[float, Field(gt=0, lt=100)]]


class VerdictSpec(StrictModel):
    margin: float = Field(
        0.03, ge=0, lt=1, description="ratios within 1 +- margin are 'no significant difference'"
    )
    percentiles: Percentiles = Field(
        [50.0, 99.0],
        min_length=1,
        description="the latency percentiles every step must have enough samples for (with "
        "slo.percentile): a step runs until it has them, up to load.max_duration_s",
    )


class SloSpec(StrictModel):
    latency_ms: PositiveFloat = 50.0
    percentile: float = Field(99.0, gt=0, lt=100)
    max_error_rate: float = Field(
        0.001, ge=0, lt=1,
        description="a step with more failed requests cannot be ranked, priced or within the SLO",
    )  # fmt: skip
    # LLM goodput: a generation counts when both hold (each optional)
    ttft_ms: PositiveFloat | None = Field(None, description="time to first token limit")
    tpot_ms: PositiveFloat | None = Field(None, description="time per output token limit")


class PlacementSpec(StrictModel):
    """Where a target may run on a Ray cluster (`servingbench run --ray`); unused locally."""

    gpus: NonNegativeInt = Field(0, description="GPUs its server needs on the node")
    gpu_type: str | None = Field(
        None,
        description="Ray's accelerator type of those GPUs (e.g. H100, A100, L4): only nodes "
        "that declare it are chosen",
    )
    resources: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="other custom Ray resources the node must have (e.g. {fast_nic: 1})",
    )


class ResourcesSpec(StrictModel):
    """CPU sets for servers and the load generator: the same for every target (fairness)."""

    server_cpus: list[int] | None = None
    client_cpus: list[int] | None = None


_LEVEL_PERCENTILES = (
    "this level compares only these percentiles (e.g. [50] where a p99 would need more "
    "time than the step may take); default: verdicts.percentiles and slo.percentile"
)


class ClosedLevel(StrictModel):
    mode: Literal["closed"]
    concurrency: PositiveInt = Field(le=MAX_CONCURRENCY)
    percentiles: Percentiles | None = Field(None, min_length=1, description=_LEVEL_PERCENTILES)


Arrival = Literal["constant", "poisson", "gamma"]
_BURSTINESS = (
    "gamma arrivals: the shape of the gaps between requests (1 is Poisson; below 1 burstier, "
    "e.g. 0.25 sends in clumps; above 1 more regular), as vllm bench's --burstiness"
)


class _Arrivals(StrictModel):
    """Open-loop arrivals: constant, Poisson, or gamma with a burstiness factor."""

    arrival: Arrival = "poisson"
    burstiness: PositiveFloat = Field(1.0, le=1000, description=_BURSTINESS)

    @model_validator(mode="after")
    def _burstiness_needs_gamma(self) -> Any:
        if self.burstiness != 1.0 and self.arrival != "gamma":
            raise ValueError(
                f"burstiness {self.burstiness:g} shapes gamma arrivals only: set arrival: gamma "
                f"(or drop burstiness for {self.arrival} arrivals)"
            )
        return self


class RampSpec(StrictModel):
    """The rate climbs from `from_rate` to the level's rate over `over_s` (from the start of
    the step, warm-up included), then holds."""

    from_rate: PositiveFloat
    over_s: PositiveFloat = Field(le=MAX_STEP_S)
    curve: Literal["linear", "exponential"] = "linear"


class RateChange(StrictModel):
    at_s: NonNegativeFloat = Field(le=MAX_STEP_S, description="seconds from the step's start")
    rate: PositiveFloat


class OpenLevel(_Arrivals):
    mode: Literal["open"]
    rate: PositiveFloat = Field(description="requests/s (with a ramp: the rate it reaches)")
    ramp: RampSpec | None = Field(None, description="linear or exponential ramp-up to `rate`")
    changes: list[RateChange] = Field(
        default_factory=list,
        description="step changes: from `at_s` on, this rate (the level starts at `rate`)",
    )
    percentiles: Percentiles | None = Field(None, min_length=1, description=_LEVEL_PERCENTILES)

    @model_validator(mode="after")
    def _one_shape(self) -> OpenLevel:
        if self.ramp is not None and self.changes:
            raise ValueError("give a ramp or step changes, not both")
        times = [c.at_s for c in self.changes]
        if times != sorted(set(times)):
            raise ValueError("changes: at_s must increase from one change to the next")
        return self

    @property
    def peak_rate(self) -> float:
        return max([self.rate, *(c.rate for c in self.changes)])

    def shape(self) -> tuple[tuple[tuple[float, float], ...], str]:
        """The rate over the step as knots (s, factor of `rate`), and a label for it."""
        if self.ramp is not None:
            start, span = self.ramp.from_rate / self.rate, self.ramp.over_s
            points: list[tuple[float, float]] = [(0.0, start), (span, 1.0)]
            if self.ramp.curve == "exponential":  # geometric growth, as 64 straight pieces
                points = [(span * i / 64, float(start ** (1 - i / 64))) for i in range(65)]
            return (
                tuple(points),
                f"ramp {self.ramp.from_rate:g}->{self.rate:g}/s ({self.ramp.curve}, {span:g} s)",
            )
        if self.changes:
            knots: list[tuple[float, float]] = [(0.0, 1.0)]
            factor = 1.0
            for change in self.changes:
                if change.at_s > 0:
                    knots.append((change.at_s - 1e-6, factor))
                factor = change.rate / self.rate
                knots.append((change.at_s, factor))
            steps = ", ".join(f"{c.rate:g}/s at {c.at_s:g} s" for c in self.changes)
            return tuple(knots), f"then {steps}"
        return (), ""


class TraceLevel(StrictModel):
    """Replay `workload.trace` with its own timing, `speedup` times faster."""

    mode: Literal["trace"]
    speedup: PositiveFloat = 1.0
    duration_s: PositiveFloat | None = Field(
        None, le=MAX_STEP_S, description="replay at most this long (default: the whole trace)"
    )
    percentiles: Percentiles | None = Field(None, min_length=1, description=_LEVEL_PERCENTILES)


Level = Annotated[ClosedLevel | OpenLevel | TraceLevel, Field(discriminator="mode")]


class ClosedProfile(StrictModel):
    kind: Literal["closed"]
    concurrency: list[Annotated[int, Field(gt=0, le=MAX_CONCURRENCY)]] = Field(min_length=1)

    @field_validator("concurrency", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value


class OpenProfile(_Arrivals):
    kind: Literal["open"]
    rates: list[PositiveFloat] = Field(min_length=1)

    @field_validator("rates", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value


class SweepProfile(StrictModel):
    kind: Literal["sweep"]
    steps: list[Level] = Field(min_length=1)


class SloSearchProfile(_Arrivals):
    """The highest open-loop rate whose latency percentile stays under the SLO."""

    kind: Literal["slo_search"]
    start_rate: PositiveFloat = 50.0
    max_rate: PositiveFloat = 100_000.0
    growth: float = Field(2.0, gt=1, description="rate multiplier while bracketing")
    precision: float = Field(0.05, gt=0, lt=1, description="stop when hi/lo - 1 <= this")
    max_steps: PositiveInt = 12


class TraceProfile(StrictModel):
    """Replay `workload.trace` once per speed-up factor (1 = the trace's own timing)."""

    kind: Literal["trace"]
    speedups: list[PositiveFloat] = Field([1.0], min_length=1)
    duration_s: PositiveFloat | None = Field(
        None, le=MAX_STEP_S, description="replay at most this long (default: the whole trace)"
    )

    @field_validator("speedups", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value


ProfileSpec = Annotated[
    ClosedProfile | OpenProfile | SweepProfile | SloSearchProfile | TraceProfile,
    Field(discriminator="kind"),
]


class StabilitySpec(StrictModel):
    """A step is measured in windows; it is stable when its last `windows` windows agree
    within `tolerance` on throughput and on `percentile`."""

    window_s: PositiveFloat = 1.0
    windows: int = Field(3, ge=2)
    tolerance: PositiveFloat = 0.10
    percentile: float = Field(99.0, gt=0, lt=100)
    settle: bool = Field(
        False,
        description="extend a step until its last `windows` windows agree (up to "
        "load.max_duration_s); the step's stability is judged either way",
    )
    max_duration_s: PositiveFloat | None = Field(
        None,
        le=MAX_STEP_S,
        description="older spelling of settle: true with load.max_duration_s",
    )


class LoadSpec(StrictModel):
    profile: ProfileSpec
    duration_s: PositiveFloat = Field(
        5.0, le=MAX_STEP_S, description="the shortest measured window of a step"
    )
    max_duration_s: PositiveFloat | None = Field(
        None,
        le=MAX_STEP_S,
        description="the longest a step may run to get enough samples for its percentiles "
        "(and to settle, if asked); default 4 x duration_s",
    )
    warmup_s: NonNegativeFloat = Field(
        1.0, le=MAX_STEP_S, description="excluded lead-in of each step"
    )
    target_warmup_s: NonNegativeFloat = Field(
        2.0, le=MAX_STEP_S, description="load before a target's first step"
    )
    timeout_s: PositiveFloat = Field(10.0, le=MAX_STEP_S, description="per-request timeout")
    max_connections: PositiveInt = Field(2048, description="open-loop connection cap")
    max_requests_per_step: PositiveInt = 2_000_000
    stability: StabilitySpec = StabilitySpec()
    processes: PositiveInt = Field(1, description="load processes (fan-out beyond one core)")
    backend: Literal["engine", "locust"] = Field(
        "engine", description="our load engine, or Locust (FastHttpUser) for comparison"
    )
    locust_workers: NonNegativeInt = Field(
        0, description="locust only: 0 = one process, N = a master and N worker processes"
    )
    nodes: PositiveInt = Field(
        1,
        description="with --ray: the load processes are dealt over this many Ray nodes (the "
        "target's own and nodes-1 others), started on one clock, their records merged",
    )
    calibrate: bool = Field(True, description="measure the client's own overhead first")

    @property
    def longest_s(self) -> float:
        """The most a step may run (its measured window): one rule for samples and settling."""
        given = self.max_duration_s or self.stability.max_duration_s
        return max(self.duration_s, given if given else min(4 * self.duration_s, MAX_STEP_S))

    @property
    def settle(self) -> bool:
        return self.stability.settle or self.stability.max_duration_s is not None

    @model_validator(mode="after")
    def _windows_fit(self) -> LoadSpec:
        limits = {"max_duration_s": self.max_duration_s,
                  "stability.max_duration_s": self.stability.max_duration_s}  # fmt: skip
        for name, value in limits.items():
            if value is not None and value < self.duration_s:
                raise ValueError(f"{name} must be at least duration_s ({self.duration_s:g})")
        steps = self.profile.steps if isinstance(self.profile, SweepProfile) else []
        shaped = isinstance(self.profile, TraceProfile) or any(
            isinstance(lv, TraceLevel) or (isinstance(lv, OpenLevel) and lv.shape()[0])
            for lv in steps
        )
        if self.nodes > 1 and (self.backend != "engine" or self.processes < self.nodes):
            raise ValueError(
                f"nodes: {self.nodes} deals load processes over Ray nodes: it needs backend: "
                f"engine and at least as many processes (processes: {self.processes})"
            )
        if shaped and self.backend == "locust":
            raise ValueError("backend: locust paces constant rates only; ramps, step changes "
                             "and trace replay need backend: engine")  # fmt: skip
        longest = self.warmup_s + self.longest_s
        for rate in _open_rates(self.profile):
            if rate * longest > self.max_requests_per_step:
                raise ValueError(
                    f"an open-loop step at {rate:g}/s for {longest:g} s sends "
                    f"{rate * longest:,.0f} requests, over max_requests_per_step="
                    f"{self.max_requests_per_step:,}: lower the rate or the duration"
                )
        return self


def _open_rates(profile: Any) -> list[float]:
    if isinstance(profile, OpenProfile):
        return list(profile.rates)
    if isinstance(profile, SweepProfile):
        return [lv.peak_rate for lv in profile.steps if isinstance(lv, OpenLevel)]
    if isinstance(profile, SloSearchProfile):
        return [profile.max_rate]
    return []


class TelemetrySpec(StrictModel):
    interval_s: PositiveFloat = Field(0.1, description="sampling period of every sampler")
    process: bool = Field(True, description="CPU and RSS of the server's process tree")
    gpu: bool = Field(True, description="NVML: utilisation, memory, power, energy, clocks")
    server: bool = Field(
        True, description="the server's own gauges over each step (Prometheus, where declared)"
    )
    server_interval_s: PositiveFloat = Field(0.25, ge=0.05, description="their scrape period")


class CostSpec(StrictModel):
    """Turn throughput into money (see harness/cost.py for the default price table)."""

    hardware: str | None = Field(None, description="price-table key (default: detected)")
    usd_per_hour: PositiveFloat | None = Field(None, description="your price; wins over table")
    prices: dict[str, PositiveFloat] = Field(default_factory=dict, description="extra entries")


class TuneObjective(StrictModel):
    """What a tuning run maximises or minimises for each stack."""

    kind: Literal["max_throughput", "min_latency"] = Field(
        "max_throughput",
        description="max_throughput: the highest throughput (requests/s; output tokens/s for "
        "LLMs) of any step within the SLO (slo.percentile <= slo.latency_ms, errors <= "
        "slo.max_error_rate, and slo.ttft_ms / slo.tpot_ms where set); min_latency: the lowest "
        "slo.percentile latency at the open-loop `rate`",
    )
    rate: PositiveFloat | None = Field(None, description="min_latency: requests/s offered")

    @model_validator(mode="after")
    def _rate_for_latency(self) -> TuneObjective:
        if self.kind == "min_latency" and self.rate is None:
            raise ValueError("min_latency needs `rate`: the open-loop requests/s to measure at")
        if self.kind == "max_throughput" and self.rate is not None:
            raise ValueError("`rate` is for min_latency; max_throughput uses load.profile")
        return self


class TuneSearch(StrictModel):
    """How configurations are chosen (Optuna): every combination, or TPE."""

    kind: Literal["grid", "tpe"] = Field(
        "tpe", description="grid: every combination (optuna GridSampler); tpe: TPESampler"
    )
    trials: PositiveInt = Field(
        20, le=10_000, description="at most this many trials per stack (a grid stops sooner)"
    )
    startup_trials: PositiveInt = Field(4, description="tpe: random trials before it models")
    seed: int = 0
    probe_s: PositiveFloat | None = Field(
        1.0,
        le=MAX_STEP_S,
        description="each trial first runs its first level this long; a trial that is clearly "
        "worse then stops (null: no probe, every trial measured in full)",
    )
    prune_margin: float = Field(
        0.25, gt=0, lt=10,
        description="clearly worse: the probe's figure this fraction below the best probe "
        "of a finished trial (above it, for latency)",
    )  # fmt: skip


class RangeSpec(StrictModel):
    low: float
    high: float
    step: PositiveFloat | None = Field(None, description="integer settings: the grid step")
    log: bool = False
    grid_points: int = Field(3, ge=2, le=100, description="float settings: values a grid takes")

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if self.high < self.low:
            raise ValueError(f"high ({self.high:g}) is below low ({self.low:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


SpaceValue = int | float | str | bool


class TuneStack(StrictModel):
    """One stack to tune: a target of this scenario (its settings are the hand-set baseline
    and the base every trial changes) and, optionally, a narrower space than its adapter's."""

    target: str = Field(description="a target name in `targets`")
    space: dict[str, list[SpaceValue] | RangeSpec] = Field(
        default_factory=dict,
        description="tunable (dotted config key, as the adapter declares it) -> a list of "
        "values or {low, high}; tunables left out keep their declared range; "
        "a value fixes one",
    )
    fixed: list[str] = Field(
        default_factory=list, description="declared tunables left at the hand-set value"
    )


class TuneSpec(StrictModel):
    """`servingbench tune`: each stack searched under one SLO, the bests re-measured."""

    objective: TuneObjective = TuneObjective()
    search: TuneSearch = TuneSearch()
    budget_s: PositiveFloat = Field(
        300.0, le=7 * 86_400.0, description="search time per stack (a trial under way finishes)"
    )
    repeats: PositiveInt = Field(
        2, le=100, description="the hand-set and the best of each stack re-measured this often"
    )
    stacks: list[TuneStack] = Field(min_length=1)


class ScenarioBase(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = 0
    repeats: PositiveInt = 1
    dataset: DatasetSpec = DatasetSpec()
    variants: VariantsSpec = VariantsSpec()
    fidelity: FidelitySpec = FidelitySpec()
    slo: SloSpec = SloSpec()
    verdicts: VerdictSpec = VerdictSpec()
    resources: ResourcesSpec = ResourcesSpec()
    telemetry: TelemetrySpec = TelemetrySpec()
    cost: CostSpec = CostSpec()
    # the model family's own section (a `Workload.spec_class`; typed in scenario_model())
    workload: Any = None
    load: LoadSpec
    tune: TuneSpec | None = Field(None, description="servingbench tune: the search per stack")

    @model_validator(mode="after")
    def _unique_target_names(self) -> ScenarioBase:
        names = [t.name for t in getattr(self, "targets", [])]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {', '.join(dupes)}")
        model = getattr(self, "model", None)
        if model is None:
            return self
        # the model's workload family says which variants exist and what else it needs
        family = registry.workload_of(model.name)
        for t in getattr(self, "targets", []):
            if t.variant not in family.variant_names:
                raise ValueError(
                    f"target {t.name}: variant {t.variant!r} is not a build of {model.name} "
                    f"(its variants: {', '.join(family.variant_names)})"
                )
            served = registry.adapters()[t.adapter.kind].workloads
            if family.name not in served:
                raise ValueError(
                    f"target {t.name}: adapter {t.adapter.kind} does not serve {model.name} "
                    f"({family.description}); it serves: {', '.join(sorted(served))}"
                )
        problems = family.check_scenario(self)
        replays = isinstance(self.load.profile, TraceProfile) or (
            isinstance(self.load.profile, SweepProfile)
            and any(isinstance(lv, TraceLevel) for lv in self.load.profile.steps)
        )
        if replays and getattr(getattr(self, "workload", None), "trace", None) is None:
            problems.append("load.profile: a trace replay needs workload.trace (a trace file "
                            "of requests and their times; generative models)")  # fmt: skip
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _tune_fits(self) -> ScenarioBase:
        if self.tune is None or not hasattr(self, "targets"):
            return self
        from harness.tuning_space import check_tune

        problems = check_tune(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _union(classes: list[type[Any]], tag: str | None) -> Any:
    if len(classes) == 1:
        return classes[0]
    if tag is None:  # told apart by their fields (pydantic's smart union)
        return Union[tuple(classes)]  # noqa: UP007
    return Annotated[Union[tuple(classes)], Field(discriminator=tag)]  # noqa: UP007


@cache
def scenario_model(in_tree: bool = False) -> type[ScenarioBase]:
    """Build the Scenario class from the registries (adapters, launchers, models); with
    `in_tree`, only this repository's adapters (not third-party packages installed here)."""
    from harness.models import MODELS

    adapter_cfgs = [cls.config_class for cls in registry.adapters().values()
                    if not in_tree or cls.__module__.startswith("adapters.")]  # fmt: skip
    launcher_cfgs = [cls.config_class for cls in registry.launchers().values()]
    model_cfgs = [entry.config_class for entry in MODELS.values()]
    process_default = registry.launchers()["process"].config_class(kind="process")
    families = registry.workloads().values()
    variant_names = tuple(dict.fromkeys(n for w in families for n in w.variant_names))
    # a family with requests of its own shape takes a `workload:` section (LLM lengths, ...)
    specs = [w.spec_class for w in families if w.spec_class is not None]
    workload_type: Any = _union(specs, None) | None if specs else None

    target = create_model(
        "TargetSpec",
        __base__=StrictModel,
        name=(str, Field(pattern=NAME_PATTERN)),
        adapter=(_union(adapter_cfgs, "kind"), ...),
        variant=(Literal[variant_names], ...),  # type: ignore[arg-type]
        launcher=(_union(launcher_cfgs, "kind"), process_default),
        startup_timeout_s=(PositiveFloat, 120.0),
        placement=(PlacementSpec, PlacementSpec()),
    )
    return create_model(
        "Scenario",
        __base__=ScenarioBase,
        model=(_union(model_cfgs, "name"), ...),
        targets=(list[target], Field(min_length=1)),
        workload=(
            workload_type,
            Field(None, description="generative models: prompt/output lengths (64 in, 32 out)"),
        ),
    )


def json_schema(in_tree: bool = False) -> dict[str, Any]:
    """The scenario file's JSON Schema (for editors: completion and checks as you type)."""
    schema = scenario_model(in_tree).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "servingbench scenario"
    return schema


# The type other modules annotate with; at run time every scenario is a scenario_model() instance.
Scenario = ScenarioBase


def load_scenario(path: str | Path, sets: Iterable[str] = ()) -> Scenario:
    """Read and validate a scenario file (with `--set KEY=VALUE` overrides applied); raise
    ConfigError naming file, field and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", f"cannot read: {exc.strerror}")]) from exc
    return parse_scenario(text, source=str(path), sets=sets)


def _resolve_paths(data: dict[str, Any], source: str) -> None:
    """A relative file path in a scenario is relative to the scenario file's folder."""
    trace = (data.get("workload") or {}).get("trace") if isinstance(data.get("workload"),
                                                                     dict) else None  # fmt: skip
    if not isinstance(trace, dict) or not isinstance(trace.get("path"), str):
        return
    path, base = Path(trace["path"]), Path(source).parent
    if not path.is_absolute() and Path(source).is_file() and (base / path).exists():
        trace["path"] = str(base / path)


def parse_scenario(text: str, source: str = "<scenario>", sets: Iterable[str] = ()) -> Scenario:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from exc
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "expected a mapping of scenario fields")])
    sets = list(sets)
    if sets:
        data = apply_sets(data, sets)
    _resolve_paths(data, source)
    if sets:
        source = f"{source} with --set {' '.join(sets)}"
    try:
        return scenario_model().model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err, data, node) for err in exc.errors()]) from None


def _yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    """PyYAML's error as ('(yaml) line 3, column 7', 'what, and the line with a caret')."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ("(yaml)", str(exc).replace("\n", " "))
    context = getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or str(exc)
    message = f"{problem} ({context})" if context else str(problem)
    snippet = mark.get_snippet(indent=6, max_length=100)
    return (f"(yaml) line {mark.line + 1}, column {mark.column + 1}",
            message + (f"\n{snippet}" if snippet else ""))  # fmt: skip


def did_you_mean(word: Any, known: Iterable[str]) -> str:
    """ "; did you mean 'fastapi'?" when one known word is close, else ""."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType) and type(None) in get_args(tp):
            rest = [a for a in get_args(tp) if a is not type(None)]
            tp = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
        else:
            return tp


def _member(tp: Any, key: Any) -> Any:
    """The member of a union that pydantic's location names: by tag value or class name."""
    for member in get_args(tp):
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        if member.__name__ == key:
            return member
        for info in member.model_fields.values():
            if get_origin(info.annotation) is Literal and key in get_args(info.annotation):
                return member
    return None


def _keys_at(loc: Sequence[Any]) -> list[str] | None:
    """The keys a mapping at pydantic location `loc` may have, or None if not a model."""
    tp: Any = scenario_model()
    for key in loc:
        tp = _unwrap(tp)
        if isinstance(key, int):
            args = get_args(tp)
            tp = args[0] if get_origin(tp) in (list, tuple) and args else None
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(key)
            tp = info.annotation if info is not None else None
        elif get_origin(tp) in (Union, types.UnionType):
            tp = _member(tp, key)
        else:
            tp = None
        if tp is None:
            return None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return None


def _message(err: Any, data: Any) -> str:
    """pydantic's message, said for a person: a near miss named, the choices listed."""
    kind, ctx, loc = err["type"], err.get("ctx") or {}, err["loc"]
    if kind == "extra_forbidden":
        known = _keys_at(loc[:-1]) or []
        listing = f" (keys here: {', '.join(sorted(known))})" if known else ""
        return f"unknown key{did_you_mean(loc[-1], known) or '; check the spelling'}{listing}"
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        field = str(ctx.get("discriminator", "kind")).strip("'")
        return (f"unknown {field} {ctx.get('tag')!r}{did_you_mean(ctx.get('tag'), tags)} "
                f"(known: {', '.join(tags)})")  # fmt: skip
    if kind == "union_tag_not_found":
        field = str(ctx.get("discriminator", "kind")).strip("'")
        return f"needs a {field!r} key: it says which kind of section this is"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        if loc and loc[-1] == "variant":  # only the builds of this scenario's model
            choices = _variants_of(data) or choices
        got = err.get("input")
        return (f"{got!r} is not one of: {', '.join(choices)}"
                f"{did_you_mean(got, choices)}")  # fmt: skip
    message = str(err["msg"])
    if "input" in err and kind != "missing" and not isinstance(err["input"], dict | list):
        message += f" (got {err['input']!r})"
    return message


def _variants_of(data: Any) -> list[str]:
    model = data.get("model") if isinstance(data, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    try:
        return list(registry.workload_of(str(name)).variant_names) if name else []
    except (KeyError, ValueError):
        return []


def _describe(err: Any, data: Any, node: Any) -> tuple[str, str]:
    """One pydantic error as ('targets[1].adapter.batching.max_batch_size (line 12)', msg)."""
    parts: list[str | int] = []
    current: Any = data
    for key in err["loc"]:
        # pydantic puts the union tag into the location (…adapter.fastapi.batching): drop it.
        if isinstance(current, dict) and key not in current and key in _tags(current):
            continue
        parts.append(key)
        current = (
            current.get(key)
            if isinstance(current, dict)
            else (
                current[key]
                if isinstance(current, list) and isinstance(key, int) and key < len(current)
                else None
            )
        )
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    line = _line_of(node, parts)
    return (f"{field or '(top level)'}{f' (line {line})' if line else ''}", _message(err, data))


def _tags(mapping: dict[str, Any]) -> tuple[Any, ...]:
    return (mapping.get("kind"), mapping.get("mode"), mapping.get("name"))


def _line_of(node: Any, parts: list[str | int]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for key in parts:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == key]
            if not match:
                return line
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def target_by_name(scenario: Scenario, names: list[str]) -> list[Any]:
    """The targets to run, in scenario order; unknown names are a ConfigError."""
    targets = list(scenario.targets)  # type: ignore[attr-defined]
    known = {t.name for t in targets}
    unknown = [n for n in names if n not in known]
    listing = ", ".join(sorted(known))
    if unknown:
        raise ConfigError(
            "--targets",
            [(n, f"no such target{did_you_mean(n, known)} (known: {listing})") for n in unknown],
            what="unknown target name",
        )
    return [t for t in targets if not names or t.name in names]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
