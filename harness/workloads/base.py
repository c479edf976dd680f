"""The workload contract: what one model family adds to a run.

A family (tensor inference, text generation, ...) knows how to build its variants, make
its requests from the model and the scenario, hand the load engine an endpoint for a served
target, check that target's answers, and compute its own step figures. The runner picks the
family from the model (`registry.workload_of`) and asks it; nothing else in the engine knows
which family ran. Each family declares as data:

- `variant_names`   its builds (`eager`, `onnx`, ... or `f32`, `q8_0`, ...)
- `columns`         its own step columns (harness/columns.py joins them into steps.csv)
- `spec_class`      the scenario's `workload:` section, when the family has one
- `leads`           the figures a run of this family is led by (throughput, latency)
- `record_metrics`  what verdicts compare besides latency and request rate, and how each
                    is computed from a step's records

Adding a family is one module here (plus its model in harness/models); adapters say which
families they serve (`Adapter.workloads`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from harness.columns import Column
from harness.config import StrictModel

if TYPE_CHECKING:
    import pandas as pd

    from harness.adapter import Adapter, Server
    from harness.fidelity import FidelityResult
    from harness.load.endpoints import Endpoint
    from harness.load.records import StepRecords
    from harness.results import RunFolder
    from harness.scenario import Scenario
    from harness.variants import BuiltVariant


@dataclass(frozen=True)
class Lead:
    """A headline figure: what "best" means for a run of this family."""

    column: str  # steps.csv (and verdicts.csv) metric
    name: str  # "throughput", "TTFT p50"
    best: str  # "highest throughput"
    unit: str
    digits: int
    higher_is_better: bool


@dataclass(frozen=True)
class RecordMetric:
    """A verdict metric computed from a step's records (successful, measured requests).

    `values(frame)` returns the requests' intended send times and one value each (ms, or a
    count); `statistic` says what is compared: their median, or their sum per second."""

    column: str
    key: str  # its name in a bootstrap
    higher_is_better: bool
    needs: tuple[str, ...]  # record columns it reads
    values: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]
    statistic: Literal["p50", "sum_rate"]


class Workload(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    variant_names: ClassVar[tuple[str, ...]]
    columns: ClassVar[tuple[Column, ...]] = ()
    spec_class: ClassVar[type[StrictModel] | None] = None
    record_metrics: ClassVar[tuple[RecordMetric, ...]] = ()
    # every request carries an X-Request-Id kept in its record (joins with server logs);
    # off where requests are so cheap that one more header would show in the figures
    request_ids: ClassVar[bool] = False

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.bundle: Any = None

    # ------------------------------------------------------------ declarations

    @classmethod
    def leads(cls, slo_percentile: float | None) -> tuple[Lead, Lead]:
        """(throughput, latency): the default leads on request throughput and the SLO's
        latency percentile (p50 when the SLO is on the median, else p99)."""
        name = "p50" if slo_percentile == 50 else "p99"
        return (
            Lead("throughput_rps", "throughput", "highest throughput", "req/s", 1, True),
            Lead(f"{name}_ms", name, f"lowest {name}", "ms", 2, False),
        )

    @classmethod
    def check_scenario(cls, scenario: Any) -> list[str]:
        """What this family cannot do with the scenario (validated before anything runs)."""
        if scenario.workload is not None and cls.spec_class is None:
            model = scenario.model.name
            return [f"workload: {model} ({cls.description}) takes no workload section"]
        return []

    @classmethod
    def variant_availability(cls, name: str) -> tuple[bool, str]:
        """Can this variant be built here, and if not, why."""
        return True, ""

    # ------------------------------------------------------------ a run

    def build_model(self) -> Any:
        """The reference model and its data (cached by recipe hash)."""
        from harness.models import build_model

        self.bundle = build_model(self.scenario.model)  # type: ignore[attr-defined]
        return self.bundle

    @abstractmethod
    def build_variant(self, name: str) -> BuiltVariant:
        """One variant of the model, validated against the reference."""

    def prepare(self, folder: RunFolder) -> None:  # noqa: B027 (most families need nothing)
        """Make the requests the targets will be sent (and record them in the folder)."""

    @abstractmethod
    def endpoint(self, adapter: Adapter[Any], server: Server) -> Endpoint:
        """The load engine's pre-built requests for one started target."""

    @abstractmethod
    def check_fidelity(self, adapter: Adapter[Any], server: Server) -> FidelityResult:
        """Before the load: does the target answer what its variant computes?"""

    def step_metrics(
        self, records: StepRecords, duration_s: float, telemetry: dict[str, float]
    ) -> dict[str, float]:
        """This family's own step columns (NaN-free dict; {} when none apply)."""
        return {}

    def server_settings(self) -> dict[str, Any]:
        """What every server of this run is told to do (`Adapter.use`): e.g. whether it may
        serve prompts from a cache."""
        return {}

    def judge(self, row: dict[str, Any]) -> str | None:
        """Why a finished step (its whole steps.csv row) must not be ranked, beyond what
        every family checks (errors, validity): a confound of this family's, or None."""
        return None

    def client_of(self, adapter: Adapter[Any], server: Server, expected: type) -> Any:
        """The adapter's client, checked to be the kind this family drives."""
        from harness.errors import ServingBenchError

        client = adapter.client(server)
        if not isinstance(client, expected):
            raise ServingBenchError(
                f"adapter {adapter.kind}: client() returned a {type(client).__name__}; "
                f"the {self.name} workload needs a {expected.__name__}"
            )
        return client
