"""On the machine that started the run: targets placed on Ray nodes, one run folder.

Each target (each repeat) is one Ray task on a node that has what it asks (placement.py);
as many run at once as there are free nodes, never two on one node. The driver follows each
task's stream of events (relay.py) and writes them into the one run folder, in the order
they happened on the node, so the report, the verdicts and `compare` read it as any run.
A node lost mid-run fails its target with the reason (its finished steps stay); the others
go on. Repeats run one after the other: a target's repeats never overlap.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.cluster import placement
from harness.cluster.connect import Cluster, ClusterError, node_alive

if TYPE_CHECKING:
    from harness.runner import _Run


@dataclass
class _Unit:
    target: Any
    repeat: int
    index: int
    total: int
    stream: Any = None
    group: Any = None  # the placement group of a target whose load spans several nodes
    node: dict[str, Any] | None = None
    ended: bool = False  # its target_end was seen (the node reported the outcome)
    began: float = 0.0  # wall clock: when it started on its node, and when it ended
    finished: float = 0.0


def run_on_cluster(run: _Run, targets: list[Any], cluster: Cluster) -> None:
    """Run every target of `run` on the cluster; block until all have ended."""
    run.folder.update_run(cluster=cluster.describe())
    lock = threading.Lock()
    ran: list[_Unit] = []
    for repeat in range(run.scenario.repeats):
        units = [_Unit(t, repeat, i, len(targets)) for i, t in enumerate(targets)]
        followers = []
        for unit in units:
            try:
                _submit(run, unit, cluster)
            except ClusterError as exc:
                run._finish_target(unit.target.name, "failed", str(exc))
                continue
            thread = threading.Thread(target=_follow, args=(run, unit, lock),
                                      name=f"follow-{unit.target.name}", daemon=True)  # fmt: skip
            thread.start()
            followers.append((unit, thread))
            ran.append(unit)
        try:
            for _, thread in followers:
                while thread.is_alive():
                    thread.join(0.5)
        except KeyboardInterrupt:
            _cancel(run, followers, lock)
            raise
        finally:
            _release([u for u, _ in followers])
            for unit, _ in followers:  # a stream collected after Ray's own shutdown at exit
                unit.stream = None  # makes Ray end the process with its exit code
            gc.collect()
    _shared_hosts(run, ran)


def _submit(run: _Run, unit: _Unit, cluster: Cluster) -> None:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from harness.cluster.relay import run_unit

    scenario, target = run.scenario, unit.target
    wanted = placement.ask(scenario, target)
    placement.check_fits(target.name, wanted, cluster.nodes)
    options = placement.task_options(wanted)
    nodes = scenario.load.nodes
    if nodes > 1:  # its load spans nodes: all of them reserved together (STRICT_SPREAD)
        unit.group = placement.load_group(scenario, wanted, cluster.nodes, target.name)
        options = {**options, "scheduling_strategy": PlacementGroupSchedulingStrategy(
            unit.group, placement_group_bundle_index=0)}  # fmt: skip
    data = scenario.model_dump(mode="json")
    unit.stream = run_unit.options(**options).remote(
        data, target.name, unit.repeat, unit.index, unit.total, run.folder.path.name
    )


def _follow(run: _Run, unit: _Unit, lock: threading.Lock) -> None:
    import ray
    from ray.exceptions import RayError

    name = unit.target.name
    try:
        for ref in unit.stream:
            if not unit.began:
                unit.began = time.time()
            event = ray.get(ref)
            with lock:
                _apply(run, unit, event)
    except RayError as exc:
        with lock:
            if not unit.ended:  # a cancelled task (Ctrl-C) ended as it was told
                _lost(run, unit, exc)
    except Exception as exc:  # a driver-side failure to write: the target says so
        with lock:
            run._finish_target(name, "failed", f"{type(exc).__name__}: {exc}")
    finally:
        unit.finished = time.time()


def _here(value: Any, scratch: str, home: str) -> Any:
    """`value` with the node's scratch run folder named as this run folder (messages such
    as "see the log at ..." must point where the log now is)."""
    if isinstance(value, str):
        return value.replace(scratch, home)
    if isinstance(value, dict):
        return {k: _here(v, scratch, home) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_here(v, scratch, home) for v in value)
    return value


def _apply(run: _Run, unit: _Unit, event: tuple[Any, ...]) -> None:
    kind, *args = event
    name = unit.target.name
    if unit.node and kind in ("folder", "observer", "done"):
        args = [_here(a, unit.node["scratch"], str(run.folder.path)) for a in args]
    if kind == "node":
        unit.node = args[0]
        run.folder.update_target(
            name, {"node": {k: v for k, v in args[0].items() if k != "scratch"}}
        )
        run.observer.on_phase(
            f"{name}: on Ray node {args[0]['ip']} ({args[0]['node_id'][:8]}, {args[0]['hostname']})"
        )
    elif kind == "folder":
        method, values = args
        getattr(run.folder, method)(*values)
    elif kind == "observer":
        method, values = args
        if method == "on_target_end":
            unit.ended = True
        getattr(run.observer, method)(*values)
    elif kind == "log":
        run.folder.log_path(name).write_bytes(args[0])
    elif kind == "done":
        failures, timings, error = args
        run.failures.extend(failures)
        for key, seconds in timings.items():
            run.add_time(f"{key} ({name})" if key == "model and variants" else key, seconds)
        if error and not unit.ended:  # it failed before the runner began the target
            run._finish_target(name, "failed", error)
            unit.ended = True


def _lost(run: _Run, unit: _Unit, exc: Exception) -> None:
    """The task ended without saying how: its node died, or the worker process did."""
    name = unit.target.name
    node = unit.node or {}
    gone = bool(node) and not node_alive(node["node_id"])
    kind = type(exc).__name__
    if gone or kind == "NodeDiedError":
        where = f"{node.get('ip')} ({str(node.get('node_id', '?'))[:8]})" if node else "?"
        reason = (f"the Ray node {where} running it was lost mid-run ({kind}); the steps it "
                  f"finished before are kept, its server log is not")  # fmt: skip
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"its Ray task failed ({kind}: {first})"
    recorded = {k: v for k, v in node.items() if k != "scratch"}
    run.folder.update_target(name, {"node_lost": {"node": recorded, "error": kind}})
    run._finish_target(name, "failed", reason)
    unit.ended = True


def _cancel(run: _Run, followers: list[tuple[_Unit, threading.Thread]],
            lock: threading.Lock) -> None:  # fmt: skip
    """Ctrl-C: every running target stops on its node (its server torn down there). The
    followers are waited for: a thread still inside Ray when the process exits makes Ray
    end it with its own exit code."""
    import contextlib

    import ray

    for unit, _ in followers:
        if unit.stream is not None and not unit.ended:
            with contextlib.suppress(Exception):
                ray.cancel(unit.stream)
            with lock:
                run._finish_target(unit.target.name, "interrupted", "interrupted (Ctrl-C)")
                unit.ended = True
    deadline = time.monotonic() + 60  # the nodes stop their servers meanwhile
    for _, thread in followers:
        thread.join(max(0.0, deadline - time.monotonic()))


def _release(units: list[_Unit]) -> None:
    import contextlib

    from ray.util import remove_placement_group

    for unit in units:
        if unit.group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(unit.group)


def _shared_hosts(run: _Run, units: list[_Unit]) -> None:
    """Nodes that are one machine (a test cluster, several raylets on one host) share its
    CPUs: two targets that ran there at the same time were not measured apart. Both get a
    `confound` (never ranked, the report says why) and the run a warning."""
    confounds: dict[str, list[str]] = {}
    for a in units:
        for b in units:
            if a is b or not (a.node and b.node) or a.node["node_id"] == b.node["node_id"]:
                continue
            if a.node["hostname"] == b.node["hostname"] and a.began < b.finished \
                    and b.began < a.finished:  # fmt: skip
                confounds.setdefault(a.target.name, []).append(b.target.name)
    if not confounds:
        return
    for name, others in confounds.items():
        host = next(u.node["hostname"] for u in units if u.target.name == name and u.node)
        run.folder.update_target(name, {"confound": (
            f"ran at the same time as {', '.join(sorted(set(others)))} on another Ray node of "
            f"the same host ({host}): they shared its CPUs")})  # fmt: skip
    info = run.folder.read_run()
    info.setdefault("warnings", []).append(
        f"{len(confounds)} target(s) ran beside another on Ray nodes of one host and are not "
        f"ranked: {', '.join(sorted(confounds))} (give each node a machine of its own)"
    )
    run.folder.write_run(info)
