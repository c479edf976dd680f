"""The adapter contract as executable checks, with no test framework attached.

Tensor servers and generative (streaming) servers share the launch, loopback, port and
teardown checks; each family adds its own answer checks.

Each `check_*` function drives a real adapter through the real `ProcessLauncher` and raises
`ConformanceError` (an AssertionError, so pytest reports it as a failure) with a message an
adapter author can act on. `harness.testing` wraps them in a pytest class; anything else
(a CLI, a notebook) can call them directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from harness.adapter import Adapter, ContainerSpec, Server
from harness.errors import LaunchError
from harness.launchers import process as process_launcher
from harness.launchers.base import LaunchRequest
from harness.launchers.process import ProcessConfig, ProcessLauncher
from harness.protocols.base import GenerationClient, GenRequest, ProtocolClient, TensorClient
from harness.variants import BuiltVariant

SHM = Path("/dev/shm")


class ConformanceError(AssertionError):
    """An adapter broke the contract; the message says which rule and what was seen."""


def _require(condition: bool, message: str) -> None:
    # explicit, not `assert`: these checks must hold under `python -O` and outside pytest
    if not condition:
        raise ConformanceError(message)


@dataclass
class Launched:
    """A server started for a check, with what is needed to stop it and inspect it."""

    launcher: ProcessLauncher
    server: Server
    request: LaunchRequest
    shm_before: set[str] = field(default_factory=set)
    stopped: bool = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.launcher.stop(self.server)


def launch(
    adapter: Adapter[Any], variant: BuiltVariant, folder: Path, timeout_s: float
) -> Launched:
    """Start `adapter` serving `variant` with the real process launcher (LaunchError if not)."""
    folder.mkdir(parents=True, exist_ok=True)
    # a short grace: a server that ignores TERM costs seconds per check, not ten
    launcher = ProcessLauncher(ProcessConfig(stop_grace_s=5))
    request = LaunchRequest(
        target=f"conformance-{adapter.kind}-{variant.name}",
        adapter=adapter,
        variant=variant,
        workdir=folder / "work",
        log_path=folder / "server.log",
        server_cpus=None,
        threads=1,
        startup_timeout_s=timeout_s,
    )
    shm_before = shm_entries()
    server = launcher.start(request)
    return Launched(launcher, server, request, shm_before)


# ---------------------------------------------------------------- process tree, sockets, shm


def process_tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def listening(procs: list[psutil.Process]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state held by `procs`."""
    found = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    found.append((conn.laddr.ip, conn.laddr.port, proc.pid))
    return found


def shm_entries() -> set[str]:
    return set(os.listdir(SHM)) if SHM.is_dir() else set()


def _shm_in_use_elsewhere(names: set[str]) -> set[str]:
    """Which of `names` a live process still maps or holds open: not ours to blame.

    The box is shared (other test sessions, other tools); a segment created meanwhile by a
    process that is still alive is theirs, while a server's leak has no live owner.
    """
    paths = {str(SHM / n): n for n in names}
    used: set[str] = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            for mapping in proc.memory_maps(grouped=True):
                if mapping.path in paths:
                    used.add(paths[mapping.path])
            for opened in proc.open_files():
                if opened.path in paths:
                    used.add(paths[opened.path])
    return used


def _gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Processes of `procs` still alive (zombies count as gone) after up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


# ---------------------------------------------------------------- the checks


def check_ready(launched: Launched, timeout_s: float) -> None:
    server, adapter = launched.server, launched.request.adapter
    _require(
        server.startup_s is not None and server.startup_s <= timeout_s,
        f"startup took {server.startup_s} s, over the {timeout_s:g} s timeout",
    )
    if server.base_url is None:  # nothing to start: the load engine calls the model itself
        _require(server.pid is None, "no base_url, but a process was started")
        return
    _require(
        server.base_url is not None and "127.0.0.1" in server.base_url,
        f"base_url {server.base_url!r} is not on loopback",
    )
    _require(set(server.ports) == set(adapter.ports), f"ports {server.ports} != {adapter.ports}")
    _require(adapter.probe(server), "probe() is False right after the launcher saw it ready")


def check_loopback_only(launched: Launched) -> None:
    tree = process_tree(launched.server.pid)
    _require(bool(tree), f"server process {launched.server.pid} is not running")
    sockets = listening(tree)
    _require(bool(sockets), "the server's process tree has no listening TCP socket")
    exposed = [s for s in sockets if not _loopback(s[0])]
    served = set(launched.server.ports.values())
    why = launched.request.adapter.listens_beyond_loopback
    if why:  # the stack's own control ports, declared and explained; never a served one
        exposed = [s for s in exposed if s[1] in served]
    _require(not exposed, f"listening beyond loopback (address, port, pid): {exposed}")
    ports = {port for _, port, _ in sockets}
    http = launched.server.ports.get("http")
    _require(http is None or http in ports, f"nothing listens on the http port {http}: {ports}")


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    # Java binds IPv4 loopback on a dual-stack socket: ::ffff:127.0.0.1 (not "loopback"
    # to Python before 3.13)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def check_answers(
    adapter: Adapter[Any],
    server: Server,
    variant: BuiltVariant,
    inputs: np.ndarray,
    atol: float,
    rtol: float,
) -> None:
    """The client's `infer` on a batch and one at a time reproduces the variant's outputs."""
    expected = variant.outputs_test()[: len(inputs)]
    client = tensor_client(adapter, server)
    batch = client.infer(inputs)
    _close(batch, expected, atol, rtol, f"a batch of {len(inputs)}")
    for i in range(min(4, len(inputs))):
        one = client.infer(inputs[i : i + 1])
        _close(one, expected[i : i + 1], atol, rtol, f"instance {i} alone")


def tensor_client(adapter: Adapter[Any], server: Server) -> TensorClient:
    client = adapter.client(server)
    _require(
        isinstance(client, TensorClient),
        f"client() returned a {type(client).__name__}, not a TensorClient (tensor in, out)",
    )
    return client  # type: ignore[return-value]


def _close(got: np.ndarray, expected: np.ndarray, atol: float, rtol: float, what: str) -> None:
    got = np.asarray(got)
    _require(got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}")
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    _require(
        bool(np.allclose(got, expected, atol=atol, rtol=rtol)),
        f"{what}: answers differ from the reference (max abs diff {diff:.3g}, atol {atol:g})",
    )
    _require(bool((got.argmax(-1) == expected.argmax(-1)).all()), f"{what}: top-1 differs")


def check_load_path(
    adapter: Adapter[Any], server: Server, variant: BuiltVariant, inputs: np.ndarray, atol: float
) -> None:
    """The pre-encoded requests the load engine sends succeed and decode to the reference."""
    from harness.load.engine import run_step
    from harness.load.plan import StepPlan

    client = tensor_client(adapter, server)
    endpoint = client.endpoint(inputs)
    plan = StepPlan(mode="closed", duration_s=0.3, concurrency=2, timeout_s=10, keep_bodies=True)
    with asyncio.Runner() as runner:
        records = runner.run(run_step(endpoint, plan))
    _require(len(records) > 0, "the load engine completed no request in 0.3 s")
    failed = int((records.error != 0).sum())
    _require(
        failed == 0,
        f"{failed}/{len(records)} load-engine requests failed "
        f"(statuses {sorted(set(records.status.tolist()))}): {records.error_samples[:3]}",
    )
    bodies: dict[int, bytes] = records.extra.get("bodies", {})
    if not isinstance(client, ProtocolClient) or not bodies:
        return  # in-process: nothing on the wire to decode
    expected = variant.outputs_test()
    for index, body in list(bodies.items())[:16]:
        got = client.decode(body)
        _close(got, expected[index % len(inputs)][None], atol, 0.0, f"load request {index}")


@contextlib.contextmanager
def first_port_taken() -> Iterator[int]:
    """The launcher's first `free_port()` returns a port a listening socket already holds."""
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = int(squatter.getsockname()[1])
    real = process_launcher.free_port
    ports = iter([taken])

    def patched(host: str = process_launcher.LOOPBACK) -> int:
        return next(ports, None) or real(host)

    process_launcher.free_port = patched
    try:
        yield taken
    finally:
        process_launcher.free_port = real
        squatter.close()


def check_port_taken(
    adapter: Adapter[Any], variant: BuiltVariant, folder: Path, timeout_s: float
) -> LaunchError:
    """A taken port is a LaunchError within the timeout that names the cause or the exit."""
    started = time.monotonic()
    with first_port_taken() as port:
        try:
            launched = launch(adapter, variant, folder, timeout_s)
        except LaunchError as exc:
            error = exc
        else:
            launched.stop()
            raise ConformanceError(f"started although its port {port} was taken")
    elapsed = time.monotonic() - started
    _require(elapsed <= timeout_s + 15, f"the LaunchError took {elapsed:.0f} s")
    text = f"{error}\n{error.log_tail}".lower()
    named = ("in use", "bind", "exited with code", "failed while starting")
    _require(any(n in text for n in named), f"the LaunchError names no cause:\n{error}")
    return error


def corrupt_copy(variant: BuiltVariant, folder: Path) -> BuiltVariant:
    """A copy of the variant folder whose artifact is garbage (same size, same name)."""
    copy = folder / f"{variant.name}-corrupt"
    shutil.copytree(variant.path, copy)
    artifact = copy / variant.artifact
    size = max(artifact.stat().st_size, 64)
    artifact.write_bytes(np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes())
    return replace(variant, path=copy)


def check_bad_artifact(
    adapter: Adapter[Any],
    variant: BuiltVariant,
    inputs: np.ndarray,
    folder: Path,
    timeout_s: float,
) -> str:
    """A corrupt artifact is a LaunchError or a failed answer, never a hang or a silent pass.

    Returns how it failed, for the test log."""
    broken = corrupt_copy(variant, folder)
    started = time.monotonic()
    try:
        launched = launch(adapter, broken, folder / "run", timeout_s)
    except LaunchError as exc:
        _require(time.monotonic() - started <= timeout_s + 15, "the LaunchError came late")
        return f"LaunchError: {str(exc).splitlines()[0]}"
    try:  # it started anyway (lazy loading): it must fail on inference, not answer
        got = tensor_client(adapter, launched.server).infer(inputs[:4])
    except Exception as exc:  # any failure is a clear one; the runner records it
        return f"{type(exc).__name__} on inference: {str(exc).splitlines()[0][:200]}"
    finally:
        launched.stop()
    expected = variant.outputs_test()[:4]
    _require(
        np.asarray(got).shape != expected.shape or not np.allclose(got, expected, atol=1e-3),
        "a corrupt artifact still produced the reference answers (is the artifact used?)",
    )
    return "answers differ from the reference (the fidelity check flags it)"


def check_teardown(launched: Launched) -> None:
    """After stop(): no process of the server's tree is alive, no new /dev/shm segment."""
    tree = process_tree(launched.server.pid)
    in_shm = launched.shm_before
    launched.stop()
    alive = _gone(tree, timeout_s=10)
    _require(
        not alive,
        "processes outlived stop(): " + "; ".join(f"{p.pid} {_cmdline(p)}" for p in alive),
    )
    new = shm_entries() - in_shm
    leaked = sorted(new - _shm_in_use_elsewhere(new)) if new else []
    _require(not leaked, f"/dev/shm segments left behind: {leaked}")


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:200]
    except psutil.Error:
        return "?"


def check_container_spec(spec: ContainerSpec) -> None:
    _require(isinstance(spec.image, str) and bool(spec.image.strip()), "image is empty")
    _require(
        isinstance(spec.command, list) and all(isinstance(a, str) for a in spec.command),
        f"command must be a list of str: {spec.command!r}",
    )
    _require(
        isinstance(spec.ports, dict)
        and all(isinstance(k, str) and type(v) is int and 0 < v < 65536
                for k, v in spec.ports.items()),
        f"ports must map names to container port numbers: {spec.ports!r}",
    )  # fmt: skip
    missing = [host for host in spec.mounts if not Path(host).exists()]
    _require(not missing, f"mounted host paths do not exist: {missing}")
    _require(
        all(isinstance(k, str) and isinstance(v, str) for k, v in spec.env.items()),
        f"env must map str to str: {spec.env!r}",
    )


# ---------------------------------------------------------------- generative servers


def generation_client(adapter: Adapter[Any], server: Server) -> GenerationClient:
    client = adapter.client(server)
    _require(
        isinstance(client, GenerationClient),
        f"client() returned a {type(client).__name__}, not a GenerationClient (generations)",
    )
    return client  # type: ignore[return-value]


def check_generations(
    adapter: Adapter[Any],
    server: Server,
    variant: BuiltVariant,
    requests: list[GenRequest],
    min_agreement: float,
) -> str:
    """Greedy next tokens agree with the variant's weights and token accounting is exact
    (the fidelity check every run makes before its load). Returns its note."""
    from harness.llm.fidelity import check_generation
    from harness.llm.variants import checks

    result = check_generation(
        generation_client(adapter, server), checks(variant), requests, 32, min_agreement
    )
    _require(result.passed, f"fidelity check failed: {result.message}")
    _require(result.samples > 0, "no greedy check prompt was compared")
    return str(result.message)


def check_streams_under_load(
    adapter: Adapter[Any], server: Server, requests: list[GenRequest], concurrency: int = 2
) -> int:
    """The load engine's streamed requests all succeed with exactly the tokens asked for,
    the first token before the end. Returns how many completed."""
    from harness.load.engine import run_step
    from harness.load.plan import StepPlan

    endpoint = generation_client(adapter, server).endpoint(requests)
    plan = StepPlan(mode="closed", duration_s=1.5, concurrency=concurrency, timeout_s=60)
    with asyncio.Runner() as runner:
        records = runner.run(run_step(endpoint, plan))
    _require(len(records) > 0, "the load engine completed no generation in 1.5 s")
    failed = int((records.error != 0).sum())
    _require(failed == 0, f"{failed}/{len(records)} streamed requests failed: "
                          f"{records.error_samples[:3]}")  # fmt: skip
    stream = records.stream
    _require(stream is not None, "the records carry no stream columns")
    assert stream is not None
    [asked] = {r.max_tokens for r in requests}  # one output length, so each stream is known
    _require(bool((stream.output_tokens == asked).all()),
             f"usage says {sorted(set(stream.output_tokens.tolist()))} output tokens, "
             f"asked for {asked}")  # fmt: skip
    _require(bool((stream.first_ns <= records.end_ns).all()), "a first token after the end")
    return len(records)
