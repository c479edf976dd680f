"""The launcher contract: start what an adapter describes, wait until ready, tear down."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.adapter import Adapter, Server
from harness.config import StrictModel
from harness.variants import BuiltVariant


class LauncherConfig(StrictModel):
    kind: str


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a launcher needs for one target; the same resources for every target."""

    target: str
    adapter: Adapter[Any]
    variant: BuiltVariant
    workdir: Path
    log_path: Path
    server_cpus: list[int] | None
    threads: int
    startup_timeout_s: float


class Launcher(ABC):
    kind: ClassVar[str]
    config_class: ClassVar[type[LauncherConfig]]
    description: ClassVar[str] = ""

    def __init__(self, config: LauncherConfig) -> None:
        self.config = config

    @abstractmethod
    def start(self, request: LaunchRequest) -> Server:
        """Start (or reach) the server and return once it is ready; LaunchError otherwise."""

    @abstractmethod
    def stop(self, server: Server) -> None:
        """Tear down everything `start` created. Safe to call twice."""
