"""The launcher contract: start what an adapter describes, wait until ready, tear down."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.adapter import Adapter, Server
from harness.config import StrictModel
from harness.variants import BuiltVariant

# What a server leaves outside the run folder is named after the servingbench process that
# made it, so `servingbench clean` (harness/clean.py) removes it once that process is gone.
TEMP_PREFIX = "sb-ts-{pid}-"  # private temp folders (TorchServe's sockets, unpacked models)
SHM_PREFIX = "sb{pid}_"  # shared-memory segments (Triton's python backend)


def owned(prefix: str) -> str:
    """TEMP_PREFIX or SHM_PREFIX for this process."""
    return prefix.format(pid=os.getpid())


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
    run_id: str = ""  # labels what the run leaves running (containers), for `clean`


def fill(values: list[str], request: LaunchRequest, threads: int | None = None) -> list[str]:
    """`values` with the THREADS and CPUS placeholders (harness.adapter) filled in."""
    count = str(threads if threads is not None else request.threads)
    # no CPU set given: the CPUs this process may use, listed (vLLM's OpenMP binding wants
    # ids; the word "all" made its engine fail to start)
    chosen = request.server_cpus or sorted(os.sched_getaffinity(0))
    cpus = ",".join(map(str, chosen))
    return [v.replace("{threads}", count).replace("{cpus}", cpus) for v in values]


def fill_env(env: dict[str, str], request: LaunchRequest, threads: int | None = None) -> dict:
    return dict(zip(env, fill(list(env.values()), request, threads), strict=True))


class Launcher(ABC):
    kind: ClassVar[str]
    config_class: ClassVar[type[LauncherConfig]]
    description: ClassVar[str] = ""

    def __init__(self, config: LauncherConfig) -> None:
        self.config = config

    @abstractmethod
    def start(self, request: LaunchRequest) -> Server:
        """Start (or reach) the server and return once it is ready; LaunchError otherwise."""

    def check(self, server: Server) -> str | None:
        """While it serves: None if the server is alive, else what happened to it
        ("server exited with code -9", "container exited"). Cheap: called around steps."""
        return None

    @abstractmethod
    def stop(self, server: Server) -> None:
        """Tear down everything `start` created. Safe to call twice."""


def tail(path: os.PathLike[str] | str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
