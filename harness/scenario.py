"""Scenario files: YAML validated by pydantic, with errors that name the file, field and line.

The adapter, launcher and model parts are discriminated unions built from the registries,
so a typo in `kind` fails at load time with the list of known kinds, and each adapter's own
config class (``extra="forbid"``) rejects keys it does not know.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
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
from harness.config import StrictModel
from harness.errors import ConfigError
from harness.llm.workload import WorkloadSpec
from harness.models import MODELS
from harness.variants import LLM_VARIANT_NAMES, VARIANT_NAMES

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # target names become file names


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


class VerdictSpec(StrictModel):
    margin: float = Field(
        0.03, ge=0, lt=1, description="ratios within 1 +- margin are 'no significant difference'"
    )


class SloSpec(StrictModel):
    latency_ms: PositiveFloat = 50.0
    percentile: float = Field(99.0, gt=0, lt=100)
    # LLM goodput: a generation counts when both hold (each optional)
    ttft_ms: PositiveFloat | None = Field(None, description="time to first token limit")
    tpot_ms: PositiveFloat | None = Field(None, description="time per output token limit")


class ResourcesSpec(StrictModel):
    """CPU sets for servers and the load generator: the same for every target (fairness)."""

    server_cpus: list[int] | None = None
    client_cpus: list[int] | None = None


class ClosedLevel(StrictModel):
    mode: Literal["closed"]
    concurrency: PositiveInt


class OpenLevel(StrictModel):
    mode: Literal["open"]
    rate: PositiveFloat
    arrival: Literal["constant", "poisson"] = "poisson"


Level = Annotated[ClosedLevel | OpenLevel, Field(discriminator="mode")]


class ClosedProfile(StrictModel):
    kind: Literal["closed"]
    concurrency: list[PositiveInt] = Field(min_length=1)

    @field_validator("concurrency", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value


class OpenProfile(StrictModel):
    kind: Literal["open"]
    rates: list[PositiveFloat] = Field(min_length=1)
    arrival: Literal["constant", "poisson"] = "poisson"

    @field_validator("rates", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value


class SweepProfile(StrictModel):
    kind: Literal["sweep"]
    steps: list[Level] = Field(min_length=1)


class SloSearchProfile(StrictModel):
    """The highest open-loop rate whose latency percentile stays under the SLO."""

    kind: Literal["slo_search"]
    start_rate: PositiveFloat = 50.0
    max_rate: PositiveFloat = 100_000.0
    growth: float = Field(2.0, gt=1, description="rate multiplier while bracketing")
    precision: float = Field(0.05, gt=0, lt=1, description="stop when hi/lo - 1 <= this")
    max_steps: PositiveInt = 12
    arrival: Literal["constant", "poisson"] = "poisson"


ProfileSpec = Annotated[
    ClosedProfile | OpenProfile | SweepProfile | SloSearchProfile, Field(discriminator="kind")
]


class StabilitySpec(StrictModel):
    """A step is measured in windows; it is stable when its last `windows` windows agree
    within `tolerance` on throughput and on `percentile`."""

    window_s: PositiveFloat = 1.0
    windows: int = Field(3, ge=2)
    tolerance: PositiveFloat = 0.10
    percentile: float = Field(99.0, gt=0, lt=100)
    max_duration_s: PositiveFloat | None = Field(
        None, description="extend an unstable step up to this long (default: no extension)"
    )


class LoadSpec(StrictModel):
    profile: ProfileSpec
    duration_s: PositiveFloat = Field(5.0, description="measured window of each step")
    warmup_s: NonNegativeFloat = Field(1.0, description="excluded lead-in of each step")
    target_warmup_s: NonNegativeFloat = Field(2.0, description="load before a target's first step")
    timeout_s: PositiveFloat = Field(10.0, description="per-request timeout")
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
    calibrate: bool = Field(True, description="measure the client's own overhead first")

    @model_validator(mode="after")
    def _windows_fit(self) -> LoadSpec:
        if self.stability.max_duration_s is not None and (
            self.stability.max_duration_s < self.duration_s
        ):
            raise ValueError("stability.max_duration_s must be at least duration_s")
        return self


class TelemetrySpec(StrictModel):
    interval_s: PositiveFloat = Field(0.1, description="sampling period of every sampler")
    process: bool = Field(True, description="CPU and RSS of the server's process tree")
    gpu: bool = Field(True, description="NVML: utilisation, memory, power, energy, clocks")


class CostSpec(StrictModel):
    """Turn throughput into money (see harness/cost.py for the default price table)."""

    hardware: str | None = Field(None, description="price-table key (default: detected)")
    usd_per_hour: PositiveFloat | None = Field(None, description="your price; wins over table")
    prices: dict[str, PositiveFloat] = Field(default_factory=dict, description="extra entries")


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
    workload: WorkloadSpec | None = Field(
        None, description="LLM models: prompt/output lengths (default: 64 in, 32 out)"
    )
    load: LoadSpec

    @model_validator(mode="after")
    def _unique_target_names(self) -> ScenarioBase:
        names = [t.name for t in getattr(self, "targets", [])]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {', '.join(dupes)}")
        model = getattr(self, "model", None)
        if model is None:
            return self
        generate = MODELS[model.name].task == "generate"
        allowed = LLM_VARIANT_NAMES if generate else VARIANT_NAMES
        for t in getattr(self, "targets", []):
            if t.variant not in allowed:
                raise ValueError(
                    f"target {t.name}: variant {t.variant!r} is not a build of {model.name} "
                    f"(its variants: {', '.join(allowed)})"
                )
        if generate and self.load.backend == "locust":
            raise ValueError("load.backend: locust cannot stream generations; use engine")
        if not generate and self.workload is not None:
            raise ValueError(f"workload: only LLM models take a workload ({model.name} is not one)")
        return self


def _union(classes: list[type[Any]], tag: str) -> Any:
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator=tag)]  # noqa: UP007


@cache
def scenario_model() -> type[ScenarioBase]:
    """Build the Scenario class from the registries (adapters, launchers, models)."""
    adapter_cfgs = [cls.config_class for cls in registry.adapters().values()]
    launcher_cfgs = [cls.config_class for cls in registry.launchers().values()]
    model_cfgs = [entry.config_class for entry in MODELS.values()]
    process_default = registry.launchers()["process"].config_class(kind="process")

    target = create_model(
        "TargetSpec",
        __base__=StrictModel,
        name=(str, Field(pattern=NAME_PATTERN)),
        adapter=(_union(adapter_cfgs, "kind"), ...),
        variant=(Literal[VARIANT_NAMES + LLM_VARIANT_NAMES], ...),  # type: ignore[arg-type]
        launcher=(_union(launcher_cfgs, "kind"), process_default),
        startup_timeout_s=(PositiveFloat, 120.0),
    )
    return create_model(
        "Scenario",
        __base__=ScenarioBase,
        model=(_union(model_cfgs, "name"), ...),
        targets=(list[target], Field(min_length=1)),
    )


# The type other modules annotate with; at run time every scenario is a scenario_model() instance.
Scenario = ScenarioBase


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise ConfigError naming file, field and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", f"cannot read: {exc.strerror}")]) from exc
    return parse_scenario(text, source=str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("(yaml)", str(exc).replace("\n", " "))]) from exc
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "expected a mapping of scenario fields")])
    try:
        return scenario_model().model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err, data, node) for err in exc.errors()]) from None


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
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key (not a field here; check the spelling)"
    elif (
        "input" in err
        and err["type"] not in ("missing",)
        and not isinstance(err["input"], dict | list)
    ):
        message += f" (got {err['input']!r})"
    return (f"{field or '(top level)'}{f' (line {line})' if line else ''}", message)


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
    if unknown:
        raise ConfigError(
            "--targets",
            [(n, f"no such target; known: {', '.join(sorted(known))}") for n in unknown],
        )
    return [t for t in targets if not names or t.name in names]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
