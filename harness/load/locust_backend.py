"""Locust as a load backend: the same step plans, our per-request records.

Locust runs headless in its own processes (importing it gevent-patches a process, so the
harness never does): one local runner, or a master and N workers, all on 127.0.0.1, each in
a session of its own (killed by group on every exit path), pinned to the client CPUs.
`harness/load/locustfile.py` sends the endpoint's pre-built requests (parsed back into
method, path, headers and body here) and every process writes every request's raw times;
this module merges them into StepRecords.

Times: t0 is the moment locust reports spawning complete (all users running), taken in the
local runner or the master with perf_counter_ns (CLOCK_MONOTONIC: the same clock in every
process); the test quits `warmup_s + duration_s` later and the requests in flight finish.
Requests sent before t0 have negative times and fall in the excluded warm-up.

Open loop does not exist in locust: `constant_throughput` paces each user, which waits for
its answer first, so a slow server slows the sender (coordinated omission). Records carry
intended = sent and a note saying so; `extra["achieved_rate_ratio"]` compares the measured
send count with the requested rate, since span-based ratios of intended = sent are always 1.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import LaunchError, ServingBenchError, UnavailableError
from harness.lifetime import die_with_parent
from harness.load.backend import ClosingContext
from harness.load.endpoints import Endpoint, HttpEndpoint
from harness.load.plan import StepPlan
from harness.load.records import (
    ERR_CONNECT,
    ERR_CONNECTION,
    ERR_HTTP_STATUS,
    ERR_NONE,
    ERR_PROTOCOL,
    ERR_TIMEOUT,
    StepRecords,
)
from harness.net import free_port

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
STARTUP_S = 60.0  # importing locust takes seconds per process on a busy 2-core box
# Open loop: enough users that each can hold its share of the rate while answers take up
# to this long (each user waits for its answer before its next request).
OPEN_LATENCY_BUDGET_S = 0.1
POLL_S = 0.05
OPEN_NOTE = "closed loop per user: latency measured from actual send, not from a schedule"
# Exception type names (as the locustfile records them) -> our error codes.
_KIND_CODES = {
    "ConnectionRefusedError": ERR_CONNECT,
    "gaierror": ERR_CONNECT,
    "Timeout": ERR_TIMEOUT,
    "TimeoutError": ERR_TIMEOUT,
    "timeout": ERR_TIMEOUT,
    "ConnectionResetError": ERR_CONNECTION,
    "ConnectionAbortedError": ERR_CONNECTION,
    "BrokenPipeError": ERR_CONNECTION,
    "HTTPConnectionClosed": ERR_CONNECTION,
    "ConnectionError": ERR_CONNECTION,
}
# The client computes this from the body itself; passing ours too would send it twice.
_CLIENT_HEADERS = {"content-length"}


@dataclass(frozen=True)
class ParsedRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


def parse_request(raw: bytes) -> ParsedRequest:
    """Split one pre-built HTTP/1.1 request back into what a client library takes."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("not an HTTP request: no end of headers")
    line, *fields = head.decode("latin-1").split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x request line: {line!r}")
    headers = []
    length: int | None = None
    for field in fields:
        name, colon, value = field.partition(":")
        if not colon:
            raise ValueError(f"malformed header line: {field!r}")
        name, value = name.strip(), value.strip()
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "transfer-encoding":
            raise ValueError("chunked request bodies are not supported")
        headers.append((name, value))
    if length is not None and length != len(body):
        raise ValueError(f"Content-Length {length} but the body has {len(body)} bytes")
    return ParsedRequest(parts[0], parts[1], headers, body)


def users_for(plan: StepPlan) -> tuple[int, float]:
    """Locust users for a plan, and each user's rate (0: no wait, closed loop)."""
    if plan.mode == "closed":
        return plan.concurrency, 0.0
    users = max(1, min(plan.max_connections, math.ceil(plan.rate * OPEN_LATENCY_BUDGET_S)))
    return users, plan.rate / users


class LocustLoad(ClosingContext):
    """`LoadBackend` on locust (FastHttpUser): 0 workers = one local runner process."""

    def __init__(self, workers: int = 0, cpus: list[int] | None = None) -> None:
        if find_spec("locust") is None:  # find_spec does not import (importing would patch us)
            raise UnavailableError("the locust load backend needs locust: pip install locust")
        self.workers = workers
        self.cpus = cpus
        self._procs: list[subprocess.Popen[bytes]] = []

    def run(self, endpoint: Endpoint, plan: StepPlan) -> StepRecords:
        if not isinstance(endpoint, HttpEndpoint):
            raise UnavailableError(f"locust drives HTTP endpoints only, not {type(endpoint)}")
        if plan.keep_bodies:
            raise UnavailableError("the locust backend does not keep response bodies")
        users, user_rate = users_for(plan)
        with tempfile.TemporaryDirectory(prefix="sb-locust-") as tmp:
            folder = Path(tmp)
            _write_config(folder, endpoint, plan, user_rate)
            try:
                self._start(folder, endpoint, plan, users)
                lifetime_cpu = self._wait(folder, plan)
            finally:
                self.close()
            return _collect(folder, plan, users, user_rate, self.workers, lifetime_cpu)

    def _start(self, folder: Path, endpoint: HttpEndpoint, plan: StepPlan, users: int) -> None:
        env = dict(os.environ, SB_LOCUST_CONFIG=str(folder / "config.json"), PYTHONUNBUFFERED="1")
        base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING"]
        run = [
            "--headless", "-u", str(users), "-r", str(users), "--only-summary",
            "--stop-timeout", str(math.ceil(plan.timeout_s + 1)), "--exit-code-on-error", "0",
            # a backstop only: the locustfile quits the test warm-up + duration after spawning
            "-t", f"{math.ceil(plan.warmup_s + plan.duration_s + STARTUP_S)}s",
        ]  # fmt: skip
        if not self.workers:
            commands = [base + run]
        else:
            port = str(free_port())
            master = [*base, *run, "--master", "--master-bind-host", "127.0.0.1",
                      "--master-bind-port", port, "--expect-workers", str(self.workers),
                      "--expect-workers-max-wait", str(int(STARTUP_S))]  # fmt: skip
            worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
            commands = [master] + [worker] * self.workers
        for i, argv in enumerate(commands):
            with open(folder / f"process-{i}.log", "wb") as log:
                # cwd is the temp folder: no locust.conf or pyproject [tool.locust] is read
                proc = subprocess.Popen(
                    argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=die_with_parent,  # none outlives servingbench, even a kill -9
                )  # fmt: skip
            self._procs.append(proc)
            if self.cpus:
                # one that already died is reported by _wait, with its log
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(proc.pid, self.cpus)

    def _wait(self, folder: Path, plan: StepPlan) -> float:
        """Reap every locust process (wait4: their whole-life CPU); raise if one failed."""
        deadline = time.monotonic() + STARTUP_S + plan.warmup_s + plan.duration_s
        deadline += plan.timeout_s + 10
        cpu = 0.0
        pending = list(self._procs)
        while pending:
            for proc in list(pending):
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu += usage.ru_utime + usage.ru_stime
                pending.remove(proc)
                if proc.returncode != 0:
                    raise LaunchError(
                        f"locust exited with code {proc.returncode} during {plan.label}",
                        _log_tail(folder, self._procs.index(proc)),
                    )
            if not pending:
                break
            if time.monotonic() > deadline:
                raise LaunchError(f"locust did not finish {plan.label} in time", _log_tail(folder))
            time.sleep(POLL_S)
        return cpu

    def close(self) -> None:
        """Kill every locust process group still alive; safe to call again."""
        for proc in self._procs:
            if proc.returncode is None:  # not reaped yet: its group id is still its own
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self._procs = []


def _write_config(folder: Path, endpoint: HttpEndpoint, plan: StepPlan, user_rate: float) -> None:
    requests = []
    for raw in endpoint.requests:
        req = parse_request(raw)
        headers = [(k, v) for k, v in req.headers if k.lower() not in _CLIENT_HEADERS]
        if not any(k.lower() == "accept-encoding" for k, _ in headers):
            # FastHttpSession adds "Accept-Encoding: gzip, deflate, br" unless one is given;
            # "identity" is what an absent header means, so the server does the same work.
            headers.append(("Accept-Encoding", "identity"))
        requests.append(
            {"method": req.method, "path": req.path, "headers": headers, "body_hex": req.body.hex()}
        )
    config = {
        "base_url": f"http://{endpoint.host}:{endpoint.port}",
        "requests": requests,
        "user_rate": user_rate,
        "timeout_s": plan.timeout_s,
        "total_s": plan.warmup_s + plan.duration_s,
        "out_dir": str(folder),
    }
    (folder / "config.json").write_text(json.dumps(config))


def _collect(
    folder: Path, plan: StepPlan, users: int, user_rate: float, workers: int, lifetime_cpu: float
) -> StepRecords:
    parts = [_load(path) for path in sorted(folder.glob("*Runner-*.npz"))]
    leader = [p for p in parts if p["meta"]["role"] != "WorkerRunner"]
    loaders = [p for p in parts if p["meta"]["role"] != "MasterRunner"]
    if len(leader) != 1 or leader[0]["meta"]["t0_ns"] is None or len(loaders) != max(1, workers):
        found = [p["meta"]["role"] for p in parts]
        raise ServingBenchError(f"locust wrote incomplete results for {plan.label}: {found}")
    meta = leader[0]["meta"]
    t0 = int(meta["t0_ns"])
    sent = np.concatenate([p["sent_ns"] for p in loaders]) - t0
    order = np.argsort(sent, kind="stable")
    status = np.concatenate([p["status"] for p in loaders])[order]
    error = np.concatenate([_codes(p) for p in loaders])[order]
    cpu = [float(p["meta"]["cpu_s"]) for p in loaders]
    busiest = int(np.argmax(cpu))
    window_ns = int((plan.warmup_s + plan.duration_s) * 1e9)
    extra: dict[str, Any] = {
        "backend": "locust",
        "users": users,
        "workers": workers,
        "t0": "locust spawning complete",
        "locust_requests": int(meta["locust_requests"]),
        "locust_failures": int(meta["locust_failures"]),
        "requests_per_process": [len(p["sent_ns"]) for p in loaders],
        "client_cpu_s_per_process": cpu,
        "client_cpu_s_all": sum(float(p["meta"]["cpu_s"]) for p in parts),
        "client_cpu_s_lifetime": lifetime_cpu,  # with locust's import and start-up
    }
    if plan.mode == "open":
        in_window = int(((sent >= plan.warmup_s * 1e9) & (sent < window_ns)).sum())
        extra.update(note=OPEN_NOTE, user_rate=user_rate,
                     achieved_rate_ratio=in_window / (plan.duration_s * plan.rate))  # fmt: skip
    sent = sent[order]
    extra["ended_by"] = "duration"  # locust runs duration_s as planned, never extended
    ok = int(((error == 0) & (sent >= plan.warmup_s * 1e9) & (sent < window_ns)).sum())
    if ok < plan.min_samples:
        extra.update(
            samples_needed=plan.min_samples,
            samples_had=ok,
            stability="not extended: the locust backend runs duration_s as planned",
        )
    return StepRecords(
        intended_ns=sent,  # locust has no schedule: the intended time is the send time
        sent_ns=sent,
        end_ns=(np.concatenate([p["end_ns"] for p in loaders]) - t0)[order],
        status=status,
        error=error,
        warmup_ns=int(plan.warmup_s * 1e9),
        window_ns=window_ns,
        wall_t0=float(meta["wall_t0"]),
        client_cpu_s=cpu[busiest],  # the busiest load process decides, as in fanout.merge
        client_wall_s=float(loaders[busiest]["meta"]["wall_s"]),
        requested_rate=plan.rate if plan.mode == "open" else None,
        connections=users,  # FastHttpUser: one connection per user (concurrency=1)
        error_samples=[s for p in loaders for s in p["meta"]["samples"]][:20],
        extra=extra,
        t0_ns=t0,
    )


def _load(path: Path) -> dict[str, Any]:
    with np.load(path) as data:
        part = {key: data[key] for key in ("sent_ns", "end_ns", "status", "kind")}
        part["meta"] = json.loads(str(data["meta"]))
    return part


def _codes(part: dict[str, Any]) -> np.ndarray:
    """Our error codes from the exception kinds one process recorded."""
    table = np.asarray(
        [ERR_NONE] + [_KIND_CODES.get(k, ERR_PROTOCOL) for k in part["meta"]["kinds"]], np.int8
    )
    codes = table[part["kind"]]
    codes[(codes != ERR_NONE) & (part["status"] >= 400)] = ERR_HTTP_STATUS
    return codes


def _log_tail(folder: Path, index: int | None = None, chars: int = 3000) -> str:
    logs = [folder / f"process-{index}.log"] if index is not None else folder.glob("*.log")
    return "\n".join(
        f"[{log.name}]\n{log.read_text(errors='replace')[-chars:]}" for log in sorted(logs)
    )
