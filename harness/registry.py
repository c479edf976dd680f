"""One registry per pluggable part, built once: in-tree modules plus entry points.

Workload families (harness/workloads: one module each) are found the same way as in-tree
adapters: every module of the package that defines a `Workload` subclass with a `name`.

Adapters come from the `adapters/` package (every module that defines an `Adapter`
subclass with a `kind`) and from the `servingbench.adapters` entry-point group, so a
third-party package adds a framework without touching the harness. Each kind is registered
exactly once; a clash is an error, never a silent override.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from functools import cache
from typing import TYPE_CHECKING, Any

from harness.errors import ServingBenchError

if TYPE_CHECKING:
    from harness.adapter import Adapter
    from harness.launchers.base import Launcher
    from harness.workloads.base import Workload

ENTRY_POINT_GROUP = "servingbench.adapters"


def _register(table: dict[str, Any], kind: str, obj: Any, origin: str) -> None:
    if kind in table and table[kind] is not obj:
        raise ServingBenchError(
            f"adapter kind {kind!r} is registered twice ({table[kind].__module__} and {origin})"
        )
    table[kind] = obj


def _defined_in(package: Any, base: type, key: str, skip_private: bool = False) -> Any:
    """(module name, class) for every `base` subclass with a `key` attribute that a module
    of `package` defines itself (an imported class is its own module's)."""
    for info in pkgutil.iter_modules(package.__path__):
        if skip_private and info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, base)
                and value.__module__ == module.__name__
                and getattr(value, key, None)
            ):
                yield module.__name__, value


@cache
def adapters() -> dict[str, type[Adapter[Any]]]:
    """Every known adapter class by kind."""
    import adapters as adapters_pkg
    from harness.adapter import Adapter

    table: dict[str, type[Adapter[Any]]] = {}
    for origin, cls in _defined_in(adapters_pkg, Adapter, "kind", skip_private=True):
        _register(table, cls.kind, cls, origin)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ServingBenchError(
                f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} is not an Adapter subclass"
            )
        _register(table, cls.kind, cls, f"entry point {ep.value}")
    return dict(sorted(table.items()))


@cache
def launchers() -> dict[str, type[Launcher]]:
    """Every launcher class by kind."""
    from harness.launchers import docker, external, process

    table: dict[str, type[Launcher]] = {}
    for cls in (process.ProcessLauncher, external.ExternalLauncher, docker.DockerLauncher):
        table[cls.kind] = cls
    return table


@cache
def workloads() -> dict[str, type[Workload]]:
    """Every workload family by name (a model's `workload` names one)."""
    import harness.workloads as package
    from harness.workloads.base import Workload

    table: dict[str, type[Workload]] = {}
    for _, cls in _defined_in(package, Workload, "name"):
        if cls.name in table:
            raise ServingBenchError(f"workload {cls.name!r} is defined twice")
        table[cls.name] = cls
    return table


def workload_of(model_name: str) -> type[Workload]:
    """The family of a model in the zoo (its entry's `workload`)."""
    from harness.models import MODELS

    return workloads()[MODELS[model_name].workload]
