"""Base class for every typed config at a boundary (scenario parts, adapters, launchers)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors, values are immutable once validated, validators stay pure."""

    model_config = ConfigDict(extra="forbid", frozen=True)
