"""On a Ray node: one target run as harness/runner.py runs it locally, streamed home.

The target's server, its load processes and its telemetry start on the node with the same
CPU sets and thread count as on one machine. Its run folder there is a scratch copy: every
write to it (targets.json fields, a steps.csv row, a step's records and telemetry) and every
progress event is yielded to the driver the moment it happens (a Ray streaming generator),
so a node lost mid-run loses only the step it was in.
"""

from __future__ import annotations

import ctypes
import os
import queue
import shutil
import tempfile
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from harness.load.plan import StepPlan
from harness.load.records import StepRecords
from harness.observer import Observer
from harness.results import RunFolder
from harness.stats import StepSummary

Event = tuple[Any, ...]


class RelayFolder(RunFolder):
    """A run folder whose target-level writes are also sent home."""

    events: queue.Queue[Event]

    def update_target(self, name: str, fields: dict[str, Any]) -> None:
        super().update_target(name, fields)
        self.events.put(("folder", "update_target", (name, fields)))

    def append_step(self, row: dict[str, Any]) -> None:
        super().append_step(row)
        self.events.put(("folder", "append_step", (row,)))

    def write_records(self, target: str, step: int, repeat: int, rec: StepRecords) -> Path:
        path = super().write_records(target, step, repeat, rec)
        self.events.put(("folder", "write_records", (target, step, repeat, rec)))
        return path

    def write_telemetry(self, target: str, step: int, repeat: int, frames: dict[str, Any]) -> None:
        super().write_telemetry(target, step, repeat, frames)
        self.events.put(("folder", "write_telemetry", (target, step, repeat, frames)))


class RelayObserver(Observer):
    def __init__(self, events: queue.Queue[Event]) -> None:
        self.events = events

    def on_phase(self, message: str) -> None:
        self.events.put(("observer", "on_phase", (message,)))

    def on_target_start(self, target: str, index: int, total: int) -> None:
        self.events.put(("observer", "on_target_start", (target, index, total)))

    def on_step_start(self, target: str, plan: StepPlan) -> None:
        self.events.put(("observer", "on_step_start", (target, plan)))

    def on_step_end(
        self, target: str, plan: StepPlan, summary: StepSummary, row: dict[str, Any]
    ) -> None:
        self.events.put(("observer", "on_step_end", (target, plan, summary, row)))

    def on_target_end(self, target: str, status: str, error: str | None) -> None:
        self.events.put(("observer", "on_target_end", (target, status, error)))


@ray.remote(max_retries=0)
def run_unit(
    scenario_data: dict[str, Any], name: str, repeat: int, index: int, total: int, run_id: str
) -> Iterator[Event]:
    """One target (one repeat) on this node: its events, then ("done", failures, timings)."""
    from harness.cluster.connect import this_node

    events: queue.Queue[Event] = queue.Queue()
    # its PID in the name: `servingbench clean` removes it once this worker is gone
    scratch = Path(tempfile.mkdtemp(prefix=f"sb-node-{os.getpid()}-"))
    worker: threading.Thread | None = None
    try:
        folder = RelayFolder(RunFolder.create(scratch, run_id).path)
        folder.events = events
        from ray.util import get_current_placement_group

        from harness.cluster import load

        load.current_group = get_current_placement_group()  # for a load over several nodes
        # where its folder is here: the driver writes its own path in messages instead
        yield ("node", {**this_node(), "scratch": str(folder.path)})
        done: dict[str, Any] = {}
        worker = threading.Thread(
            target=_work, args=(scenario_data, name, repeat, index, total, folder, done),
            name="target", daemon=True,
        )  # fmt: skip
        worker.start()
        while worker.is_alive() or not events.empty():
            try:
                yield events.get(timeout=0.2)
            except queue.Empty:
                continue
        log = folder.log_path(name)
        if log.exists():
            yield ("log", log.read_bytes())
        yield ("done", done.get("failures", []), done.get("timings", {}), done.get("error"))
    except (KeyboardInterrupt, GeneratorExit):  # ray.cancel: the target stops, its server too
        if worker is not None and worker.is_alive():
            _interrupt(worker)
            worker.join(60)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _work(
    scenario_data: dict[str, Any],
    name: str,
    repeat: int,
    index: int,
    total: int,
    folder: RelayFolder,
    done: dict[str, Any],
) -> None:
    """The runner's own path for one target. Its processes are started from this thread
    and stopped by it: their parent-death signal is armed against this thread."""
    from harness.runner import _load_backend, _Run
    from harness.scenario import scenario_model, target_by_name
    from harness.telemetry import gpu_inventory

    run: _Run | None = None
    try:
        scenario = scenario_model().model_validate(scenario_data)
        target = target_by_name(scenario, [name])[0]
        run = _Run(scenario, folder, RelayObserver(folder.events))
        run.gpu_available = bool(gpu_inventory()[0])
        with run.environments_beside([target]), run.timed("model and variants"):
            run.prepare([target.variant])  # cached after the first time on this node
        with _load_backend(scenario) as load:
            spread = getattr(load, "nodes", None)  # ClusterLoad: the other nodes' load
            if spread is not None:
                from harness.cluster.connect import this_node

                here = {k: this_node()[k] for k in ("node_id", "hostname")}
                folder.update_target(name, {"load_nodes": [here, *spread]})
            run.run_target(target, load, repeat, index, total)
    except KeyboardInterrupt:
        done["error"] = "interrupted (the run was cancelled)"
    except Exception as exc:  # before the target began: it fails with this, the run goes on
        done["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
    finally:
        if run is not None:
            done.update(failures=run.failures, timings=run.timings)


def _interrupt(thread: threading.Thread) -> None:
    """Raise KeyboardInterrupt in `thread`, as Ctrl-C would in a local run: the runner tears
    its server down on the way out."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
        )
