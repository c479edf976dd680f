"""Load generator benchmark: our engine vs locust (FastHttpUser) vs wrk, side by side.

    python benchmarks/loadgen_bench.py [--quick] [--json results/loadgen_bench.json]

Measures, against harness.nullserver on 127.0.0.1 (server pinned to CPU 0, every client
pinned to CPU 1):
  1. client CPU per request and throughput, closed loop, 32 connections, null server;
  2. the highest open-loop rate our engine's one load process holds (send-rate ratio
     >= 0.98 and send-lag p99 < 1 ms), and whether the server or the client limited it;
  3. latency added at p50/p99 against a server with a fixed 5 ms delay at 200 req/s;
  4. a stall test (server holds every answer 1 s out of each 5 s) at 200 req/s: measured
     p90/p99 against the truth computed from the schedule;
  5. the client cost of checking answers during load (harness.load.endpoints.AnswerCheck:
     every body's length, one in 64 or every body decoded and its shape checked), closed
     loop c=32 against a null server answering a digits-sized output, runs interleaved.
Every child (servers, wrk, locust) runs in its own process group and is killed by group
in a `finally`, also on Ctrl-C/SIGTERM; our engine's LoadProcess is closed by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.load.endpoints import AnswerCheck, HttpEndpoint  # noqa: E402
from harness.load.http import build_request  # noqa: E402
from harness.load.plan import StepPlan  # noqa: E402
from harness.load.records import StepRecords  # noqa: E402
from harness.load.worker import LoadProcess  # noqa: E402
from harness.protocols import PlainJsonClient  # noqa: E402
from harness.stats import summarize  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
HOST = "127.0.0.1"
BODY = b'{"inputs": [[0.0, 0.0, 0.0, 0.0]]}'
LOCUSTFILE = Path(__file__).resolve().parent / "locust_runner.py"

# Targets for our engine.
CPU_US_TARGET = 20.0
OPEN_RATE_TARGET = 10_000.0
RATE_RATIO_MIN = 0.98
SEND_LAG_P99_MAX_MS = 1.0
ADDED_P50_MAX_MS = 0.5
ADDED_P99_MAX_MS = 1.5
STALL_TOLERANCE = 0.10
SERVER_BUSY_PCT = 90.0  # server CPU above this: the server, not the client, is the limit
CLIENT_BUSY_PCT = 85.0  # client process CPU above this: the client is the limit
OTHER_LOAD_PCT = 20.0  # core busy beyond our own processes: the box was shared meanwhile

DELAY_MS = 5.0
LATENCY_RATE = 200.0
STALL_DELAY_MS = 1.0
STALL_EVERY_S = 5.0
STALL_S = 1.0

WRK_LUA = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LB_JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"errors\\": %%d, " ..
    "\\"p50_us\\": %%d, \\"p90_us\\": %%d, \\"p99_us\\": %%d, \\"max_us\\": %%d, " ..
    "\\"mean_us\\": %%f}\\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- processes


class Child:
    """A child process in its own process group (session); `kill` ends the whole group."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.log = log
        with open(log, "ab") as out:  # O_APPEND: we may read it while the child writes
            self.popen = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        self.rusage: Any = None  # resource.struct_rusage once reaped

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def poll(self) -> int | None:
        if self.popen.returncode is None:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = rusage
        return self.popen.returncode

    def wait(self, timeout_s: float, tick: Any = None) -> int:
        deadline = time.monotonic() + timeout_s
        while self.poll() is None:
            if tick is not None:
                tick()
            if time.monotonic() > deadline:
                self.kill()
                raise BenchError(f"{self.log.stem} did not finish in {timeout_s:.0f} s; killed")
            time.sleep(0.02)
        return self.popen.returncode

    def cpu_s(self) -> float:
        """CPU (user + system) of the reaped child, from its rusage."""
        if self.rusage is None:
            return math.nan
        return float(self.rusage.ru_utime + self.rusage.ru_stime)

    def kill(self) -> None:
        if self.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + grace
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.returncode is not None:
                return


@dataclass
class Server:
    port: int
    pid: int
    t0: float  # the server's perf_counter() at start: its stall clock's origin
    delay_ms: float
    stall_every_s: float
    stall_s: float

    def cpu_s(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def _core_busy_pct(before: list[Any], after: list[Any], cpu: int) -> float:
    total = sum(after[cpu]) - sum(before[cpu])
    idle = (after[cpu].idle + after[cpu].iowait) - (before[cpu].idle + before[cpu].iowait)
    return (1 - idle / total) * 100 if total > 0 else math.nan


class Meter:
    """Server-process CPU and both cores' busy share (all processes, softirq included),
    sampled every 0.1 s while a tool runs, so a sub-window (locust's) can be picked."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.samples: list[tuple[float, float, list[Any]]] = []
        self.sample()

    def sample(self) -> None:
        self.samples.append(
            (time.perf_counter(), self.server.cpu_s(), psutil.cpu_times(percpu=True))
        )

    def tick(self) -> None:
        if time.perf_counter() - self.samples[-1][0] >= 0.1:
            self.sample()

    def stop(self, t_from: float | None = None, t_to: float | None = None) -> dict[str, float]:
        self.sample()
        first, last = self.samples[0], self.samples[-1]
        if t_from is not None and t_to is not None:
            inside = [x for x in self.samples if t_from <= x[0] <= t_to]
            if len(inside) >= 2:
                first, last = inside[0], inside[-1]
        wall = last[0] - first[0]
        return {
            "server_cpu_pct": (last[1] - first[1]) / wall * 100 if wall > 0 else math.nan,
            "server_core_busy_pct": _core_busy_pct(first[2], last[2], SERVER_CPU),
            "client_core_busy_pct": _core_busy_pct(first[2], last[2], CLIENT_CPU),
        }


def server_limited(fig: dict[str, Any]) -> bool:
    return bool(
        fig.get("server_cpu_pct", 0) >= SERVER_BUSY_PCT
        or fig.get("server_core_busy_pct", 0) >= SERVER_BUSY_PCT
    )


def limit_of(fig: dict[str, Any]) -> str:
    """Which side held the figure: a client process near a full core, else a busy server
    core (the server process, softirq or other load on it), else neither."""
    if fig.get("client_cpu_pct", 0) >= CLIENT_BUSY_PCT:
        return f"client ({fig['client_cpu_pct']:.0f}% of its core)"
    if server_limited(fig):
        return (
            f"server side (server process {fig['server_cpu_pct']:.0f}% CPU, core "
            f"{SERVER_CPU} {fig['server_core_busy_pct']:.0f}% busy incl. softirq/other load)"
        )
    return (
        f"neither saturated (client {fig.get('client_cpu_pct', 0):.0f}%, server "
        f"{fig.get('server_cpu_pct', 0):.0f}%, core {SERVER_CPU} "
        f"{fig.get('server_core_busy_pct', 0):.0f}% busy)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def nullserver(
    workdir: Path,
    delay_ms: float = 0.0,
    stall_every_s: float = 0.0,
    stall_s: float = 0.0,
    outputs: list[list[float]] | None = None,
) -> Iterator[Server]:
    port = free_port()
    cmd = [
        "taskset",
        "-c",
        str(SERVER_CPU),
        sys.executable,
        "-m",
        "harness.nullserver",
        "--host",
        HOST,
        "--port",
        str(port),
        "--delay-ms",
        str(delay_ms),
    ]
    if stall_every_s > 0:
        cmd += ["--stall-every-s", str(stall_every_s), "--stall-s", str(stall_s)]
    if outputs is not None:
        cmd += ["--outputs", json.dumps(outputs)]
    child = Child(cmd, workdir / f"nullserver-{port}.log")
    try:
        deadline = time.monotonic() + 15
        t0: float | None = None
        while True:
            if child.poll() is not None:
                raise BenchError(f"nullserver exited: {child.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"nullserver did not start: {child.output()[-2000:]}")
            if t0 is None:
                match = re.search(r"t0=([0-9.]+)", child.output())
                t0 = float(match.group(1)) if match else None
            if t0 is not None:
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    break
                except OSError:
                    pass
            time.sleep(0.05)
        yield Server(port, child.pid, t0, delay_ms, stall_every_s, stall_s)
    finally:
        child.kill()


def endpoint(server: Server) -> HttpEndpoint:
    return HttpEndpoint(
        HOST, server.port, (build_request(HOST, server.port, "POST", "/predict", BODY),)
    )


# --------------------------------------------------------------------------- tool runners


def run_engine(
    lp: LoadProcess, server: Server, plan: StepPlan
) -> tuple[StepRecords, dict[str, float]]:
    """One step of our engine; returns its records and the server-side load meanwhile."""
    meter = Meter(server)
    rec = lp.run(endpoint(server), plan)
    return rec, meter.stop()


def run_wrk(server: Server, workdir: Path, connections: int, duration_s: int) -> dict[str, Any]:
    script = workdir / "wrk_post.lua"
    script.write_text(WRK_LUA % {"body": BODY.decode()})
    cmd = [
        "taskset",
        "-c",
        str(CLIENT_CPU),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        f"{server.url}/predict",
    ]
    meter = Meter(server)
    child = Child(cmd, workdir / f"wrk-{connections}-{time.monotonic_ns()}.log")
    try:
        t0 = time.perf_counter()
        rc = child.wait(duration_s + 20, meter.tick)
        wall = time.perf_counter() - t0
    finally:
        child.kill()
    load = meter.stop()
    out = child.output()
    match = re.search(r"^LB_JSON (\{.*\})$", out, re.M)
    if rc != 0 or not match:
        raise BenchError(f"wrk failed (rc={rc}): {out[-1500:]}")
    res: dict[str, Any] = json.loads(match.group(1))
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    seconds = res["duration_us"] / 1e6
    res.update(
        cpu_s=child.cpu_s(),
        wall_s=wall,
        **load,
        throughput_rps=float(rps.group(1)) if rps else res["requests"] / seconds,
        client_cpu_pct=child.cpu_s() / wall * 100,
        cpu_us_per_req=child.cpu_s() / res["requests"] * 1e6 if res["requests"] else math.nan,
        p50_ms=res["p50_us"] / 1e3,
        p90_ms=res["p90_us"] / 1e3,
        p99_ms=res["p99_us"] / 1e3,
    )
    return res


def run_locust(
    server: Server,
    workdir: Path,
    users: int,
    user_rate: float,
    duration_s: float,
    warmup_s: float,
    latencies: bool,
) -> dict[str, Any]:
    out = workdir / f"locust-{time.monotonic_ns()}.json"
    env = dict(
        os.environ,
        LB_OUT=str(out),
        LB_BODY=BODY.decode(),
        LB_USER_RATE=str(user_rate),
        LB_WARMUP_S=str(warmup_s),
        LB_LATENCIES="1" if latencies else "0",
        PYTHONUNBUFFERED="1",
    )
    # -t counts from the start of spawning (-r users: about one second) and includes warm-up.
    run_time = math.ceil(1 + warmup_s + duration_s)
    cmd = [
        "taskset",
        "-c",
        str(CLIENT_CPU),
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{run_time}s",
        "--host",
        server.url,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "2",
    ]
    meter = Meter(server)
    child = Child(cmd, workdir / f"locust-{time.monotonic_ns()}.log", env=env)
    try:
        rc = child.wait(run_time + 40, meter.tick)
    finally:
        child.kill()
    if not out.exists():
        raise BenchError(f"locust wrote no result (rc={rc}): {child.output()[-1500:]}")
    res: dict[str, Any] = json.loads(out.read_text())
    if not res.get("ok") or not res.get("requests"):
        raise BenchError(f"locust measured nothing (rc={rc}): {child.output()[-1500:]}")
    load = meter.stop(res.pop("t_start"), res.pop("t_end"))
    lat = np.asarray(res.pop("latencies_ms"), dtype=np.float64)
    res.update(
        **load,
        process_cpu_s=child.cpu_s(),
        throughput_rps=res["requests"] / res["wall_s"],
        client_cpu_pct=res["cpu_s"] / res["wall_s"] * 100,
        cpu_us_per_req=res["cpu_s"] / res["requests"] * 1e6,
    )
    if latencies and len(lat):
        res.update(
            samples=len(lat),
            p50_ms=float(np.percentile(lat, 50)),
            p90_ms=float(np.percentile(lat, 90)),
            p99_ms=float(np.percentile(lat, 99)),
        )
    return res


def guarded(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one tool; a failure becomes an error entry instead of ending the bench."""
    try:
        return dict(fn(*args, **kwargs))
    except Exception as exc:  # KeyboardInterrupt is not an Exception: it still propagates
        return {"error": str(exc).strip().splitlines()[-1][:200] if str(exc) else repr(exc)}


# --------------------------------------------------------------------------- the four parts


def engine_figures(rec: StepRecords, load: dict[str, float]) -> dict[str, Any]:
    s = summarize(rec)
    n = len(rec)
    return {
        "requests": n,
        "measured": s.requests,
        "errors": s.errors,
        "cpu_s": rec.client_cpu_s,
        "wall_s": rec.client_wall_s,
        "cpu_us_per_req": rec.client_cpu_s / n * 1e6 if n else math.nan,
        "client_cpu_pct": s.client_cpu_pct,
        **load,
        "throughput_rps": s.throughput_rps,
        "p50_ms": s.p50_ms,
        "p90_ms": s.p90_ms,
        "p99_ms": s.p99_ms,
        "achieved_rate_ratio": s.achieved_rate_ratio,
        "send_lag_p99_ms": s.send_lag_p99_ms,
        "connections": rec.connections,
        "connection_cap_hit": rec.connection_cap_hit,
    }


def part_cpu(lp: LoadProcess, workdir: Path, dur: int, warm: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with nullserver(workdir) as server:
        rec, load = run_engine(
            lp, server, StepPlan(mode="closed", concurrency=32, duration_s=dur, warmup_s=warm)
        )
        out["ours"] = engine_figures(rec, load)
        out["locust"] = guarded(
            run_locust,
            server,
            workdir,
            users=32,
            user_rate=0,
            duration_s=dur,
            warmup_s=warm,
            latencies=False,
        )
        out["wrk"] = guarded(run_wrk, server, workdir, connections=32, duration_s=dur)
    return out


# one digits-sized answer: 10 scores, as the in-tree servers format them
CHECK_OUTPUTS = [[round(-2.0 + 0.4123456 * i, 6) for i in range(10)]]


def part_checks(lp: LoadProcess, workdir: Path, dur: float, warm: float, rounds: int) -> dict:
    """Client CPU per request with no answer check, every body's length only, the default
    (every length, one body in `every` decoded) and every body decoded, interleaved."""
    figures: dict[str, list[float]] = {"none": [], "length": [], "default": [], "every": []}
    with nullserver(workdir, outputs=CHECK_OUTPUTS) as server:
        base = endpoint(server)
        expected = np.asarray(CHECK_OUTPUTS, np.float32)
        check = PlainJsonClient(f"http://{HOST}:{server.port}").answer_check(expected)
        assert check is not None

        def sampled(every: int) -> HttpEndpoint:
            spec = AnswerCheck(check.min_bytes, check.max_bytes, check.decoder, check.shape, every,
                               check.starts)  # fmt: skip
            return HttpEndpoint(base.host, base.port, base.requests, spec)

        variants = {
            "none": base,
            "length": sampled(10**12),  # no body is ever decoded
            "default": HttpEndpoint(base.host, base.port, base.requests, check),
            "every": sampled(1),
        }
        plan = StepPlan(mode="closed", concurrency=32, duration_s=dur, warmup_s=warm)
        for _ in range(rounds):
            for name, ep in variants.items():
                rec = lp.run(ep, plan)
                bad = int((rec.error != 0).sum())
                if bad:
                    raise RuntimeError(f"answer check {name}: {bad} requests failed")
                figures[name].append(rec.client_cpu_s / len(rec) * 1e6)
    median = {k: float(np.median(v)) for k, v in figures.items()}
    return {
        "us_per_request": median,
        "runs": figures,
        "added_us_length": median["length"] - median["none"],
        "added_us_default": median["default"] - median["none"],
        "added_us_every": median["every"] - median["none"],
        "every": check.every,
    }


def part_rate(
    lp: LoadProcess, workdir: Path, rates: list[float], dur: float, warm: float
) -> dict[str, Any]:
    steps = []
    with nullserver(workdir) as server:
        for rate in rates:
            plan = StepPlan(
                mode="open", rate=rate, arrival="constant", duration_s=dur, warmup_s=warm
            )
            rec, load = run_engine(lp, server, plan)
            f = engine_figures(rec, load)
            f["rate"] = rate
            f["held"] = bool(
                f["achieved_rate_ratio"] >= RATE_RATIO_MIN
                and f["send_lag_p99_ms"] < SEND_LAG_P99_MAX_MS
                and f["errors"] == 0
            )
            f["server_limited"] = server_limited(f)
            f["limited_by"] = limit_of(f)
            steps.append(f)
    held = [s["rate"] for s in steps if s["held"]]
    best = max(held) if held else 0.0
    first_miss = next((s for s in steps if not s["held"] and s["rate"] > best), None)
    if first_miss is None:
        limit = "no limit reached (the ladder ended)"
    else:
        limit = f"first miss at {first_miss['rate']:g}/s: {first_miss['limited_by']}"
    return {
        "steps": steps,
        "max_sustained_rps": best,
        "top_of_ladder": best == max(rates),
        "limited_by": limit,
    }


def part_latency(lp: LoadProcess, workdir: Path, dur: int, warm: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with nullserver(workdir, delay_ms=DELAY_MS) as server:
        rec, load = run_engine(
            lp,
            server,
            StepPlan(
                mode="open", rate=LATENCY_RATE, arrival="constant", duration_s=dur, warmup_s=warm
            ),
        )
        out["ours"] = engine_figures(rec, load)
        out["ours"]["mode"] = f"open loop, constant {LATENCY_RATE:g}/s"
        out["locust"] = guarded(
            run_locust,
            server,
            workdir,
            users=20,
            user_rate=LATENCY_RATE / 20,
            duration_s=dur,
            warmup_s=warm,
            latencies=True,
        )
        out["locust"]["mode"] = "closed loop per user: 20 users x constant_throughput(10)"
        out["wrk"] = guarded(run_wrk, server, workdir, connections=2, duration_s=dur)
        out["wrk"]["mode"] = "closed loop, -c2 (no rate: wrk2 not packaged)"
    for res in out.values():
        if "p50_ms" in res:
            res["added_p50_ms"] = res["p50_ms"] - DELAY_MS
            res["added_p99_ms"] = res["p99_ms"] - DELAY_MS
    return out


def stall_truth_ms(rec: StepRecords, server: Server) -> np.ndarray:
    """What an ideal client sees: each request, sent at its intended time, waits out the
    rest of any stall it lands in, then the fixed delay (server: answer at
    max(arrival, stall end) + delay)."""
    mask = rec.measured()
    arrival_s = (rec.t0_ns + rec.intended_ns[mask]) / 1e9  # CLOCK_MONOTONIC, system-wide
    phase = np.mod(arrival_s - server.t0, server.stall_every_s)
    wait = np.where(phase < server.stall_s, server.stall_s - phase, 0.0)
    return (wait + server.delay_ms / 1e3) * 1e3


def part_stall(lp: LoadProcess, workdir: Path, dur: int, warm: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with nullserver(
        workdir, delay_ms=STALL_DELAY_MS, stall_every_s=STALL_EVERY_S, stall_s=STALL_S
    ) as server:
        # Start so that the measured window opens mid-way between stalls: it then holds
        # whole stalls only (2 in 10 s). The truth below does not depend on this.
        target = (STALL_EVERY_S / 2 - warm) % STALL_EVERY_S
        phase = (time.perf_counter() - server.t0) % STALL_EVERY_S
        time.sleep((target - phase) % STALL_EVERY_S)
        plan = StepPlan(
            mode="open",
            rate=LATENCY_RATE,
            arrival="constant",
            duration_s=dur,
            warmup_s=warm,
            timeout_s=5.0,
        )
        rec, load = run_engine(lp, server, plan)
        ours = engine_figures(rec, load)
        truth = stall_truth_ms(rec, server)
        ours.update(
            true_p50_ms=float(np.percentile(truth, 50)),
            true_p90_ms=float(np.percentile(truth, 90)),
            true_p99_ms=float(np.percentile(truth, 99)),
            stalled_share=float((truth > server.delay_ms * 1.5).mean()),
        )
        ours["p90_ratio"] = ours["p90_ms"] / ours["true_p90_ms"]
        ours["p99_ratio"] = ours["p99_ms"] / ours["true_p99_ms"]
        out["ours"] = ours
        out["locust"] = guarded(
            run_locust,
            server,
            workdir,
            users=20,
            user_rate=LATENCY_RATE / 20,
            duration_s=dur,
            warmup_s=warm,
            latencies=True,
        )
        out["locust"]["mode"] = "20 users x constant_throughput(10), closed loop per user"
        out["wrk"] = guarded(run_wrk, server, workdir, connections=4, duration_s=dur)
        out["wrk"]["mode"] = "closed loop, -c4"
    return out


# --------------------------------------------------------------------------- report


def fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def cell(res: dict[str, Any], key: str, spec: str = ".1f", unit: str = "") -> str:
    if "error" in res:
        return "[red]error[/red]"
    return fmt(res.get(key), spec, unit)


CORE_ROW = f"core {CLIENT_CPU} / core {SERVER_CPU} busy: all (not ours, approx.)"


def other_load(res: dict[str, Any]) -> tuple[float, float]:
    """Busy share of the client and server cores not used by the client or server process:
    other processes on the box, and softirq (loopback network) time. Approximate: per-core
    times are tick-sampled and span the whole tool run, the engine's CPU is exact and spans
    its step only; clamped at 0."""
    return (
        max(0.0, res.get("client_core_busy_pct", math.nan) - res.get("client_cpu_pct", math.nan)),
        max(0.0, res.get("server_core_busy_pct", math.nan) - res.get("server_cpu_pct", math.nan)),
    )


def core_cell(res: dict[str, Any]) -> str:
    if "error" in res:
        return "[red]error[/red]"
    client_other, server_other = other_load(res)
    return (
        f"{fmt(res.get('client_core_busy_pct'), '.0f')}% ({fmt(client_other, '.0f')}%) / "
        f"{fmt(res.get('server_core_busy_pct'), '.0f')}% ({fmt(server_other, '.0f')}%)"
    )


def verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]MISS[/red]"


def build_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    ours_cpu = r["cpu"]["ours"]["cpu_us_per_req"]
    ten_k = next((s for s in r["rate"]["steps"] if s["rate"] == OPEN_RATE_TARGET), None)
    lat = r["latency"]["ours"]
    st = r["stall"]["ours"]
    rate_fig = (
        f"{OPEN_RATE_TARGET:g}/s: ratio {ten_k['achieved_rate_ratio']:.3f}, "
        f"lag p99 {ten_k['send_lag_p99_ms']:.3f} ms"
        if ten_k
        else "not run"
    )
    return [
        {
            "target": f"client CPU <= {CPU_US_TARGET:g} us/request (closed loop, c=32)",
            "figure": f"{ours_cpu:.1f} us",
            "pass": ours_cpu <= CPU_US_TARGET,
        },
        {
            "target": f"open loop {OPEN_RATE_TARGET:g} req/s, one process, send-lag p99 "
            f"< {SEND_LAG_P99_MAX_MS:g} ms",
            "figure": rate_fig,
            "pass": bool(ten_k and ten_k["held"]),
        },
        {
            "target": f"added p50 < {ADDED_P50_MAX_MS:g} ms (200/s, 5 ms server)",
            "figure": f"{lat['added_p50_ms']:+.3f} ms",
            "pass": lat["added_p50_ms"] < ADDED_P50_MAX_MS,
        },
        {
            "target": f"added p99 < {ADDED_P99_MAX_MS:g} ms (200/s, 5 ms server)",
            "figure": f"{lat['added_p99_ms']:+.3f} ms",
            "pass": lat["added_p99_ms"] < ADDED_P99_MAX_MS,
        },
        {
            "target": f"stall test: p90 within {STALL_TOLERANCE:.0%} of truth",
            "figure": f"x{st['p90_ratio']:.3f}",
            "pass": abs(st["p90_ratio"] - 1) <= STALL_TOLERANCE,
        },
        {
            "target": f"stall test: p99 within {STALL_TOLERANCE:.0%} of truth",
            "figure": f"x{st['p99_ratio']:.3f}",
            "pass": abs(st["p99_ratio"] - 1) <= STALL_TOLERANCE,
        },
    ]


def render(console: Console, r: dict[str, Any]) -> None:
    cpu, rate, lat, st = r["cpu"], r["rate"], r["latency"], r["stall"]
    tools = ("ours", "locust", "wrk")

    load = r["meta"]["loadavg_start"]
    t = Table(
        title=f"Load generators side by side ({r['meta']['mode']} run; client CPU "
        f"{CLIENT_CPU}, server CPU {SERVER_CPU}; load average at start "
        f"{load[0]:.2f} on {r['meta']['cpus']} CPUs)",
        show_lines=False,
    )
    t.add_column("figure")
    t.add_column("target")
    t.add_column("ours (engine)", justify="right")
    t.add_column("locust FastHttpUser", justify="right")
    t.add_column("wrk", justify="right")

    t.add_section()
    t.add_row("[b]1. closed loop, 32 conns, null server[/b]", "", "", "", "")
    t.add_row(
        "client CPU per request",
        f"<= {CPU_US_TARGET:g} us",
        *(cell(cpu[k], "cpu_us_per_req", ".1f", " us") for k in tools),
    )
    t.add_row("throughput", "", *(cell(cpu[k], "throughput_rps", ",.0f", "/s") for k in tools))
    t.add_row("client core used", "", *(cell(cpu[k], "client_cpu_pct", ".0f", "%") for k in tools))
    t.add_row(
        "server process CPU", "", *(cell(cpu[k], "server_cpu_pct", ".0f", "%") for k in tools)
    )
    t.add_row(CORE_ROW, "", *(core_cell(cpu[k]) for k in tools))
    t.add_section()
    t.add_row("[b]2. highest rate, one load process[/b]", "", "", "", "")
    t.add_row(
        "closed loop (= throughput above)",
        "",
        *(cell(cpu[k], "throughput_rps", ",.0f", "/s") for k in tools),
    )
    best = rate["max_sustained_rps"]
    t.add_row(
        "open loop, ratio>=0.98 & lag p99<1 ms",
        f">= {OPEN_RATE_TARGET:,.0f}/s",
        f"{'>= ' if rate['top_of_ladder'] else ''}{best:,.0f}/s",
        "n/a (no open loop)",
        "n/a (no rate option)",
    )
    t.add_section()
    t.add_row(f"[b]3. 200 req/s, server delay {DELAY_MS:g} ms[/b]", "", "", "", "")
    t.add_row(
        "p50 / p99 measured",
        "",
        *(
            "[red]error[/red]"
            if "error" in lat[k]
            else f"{fmt(lat[k].get('p50_ms'), '.3f')} / {fmt(lat[k].get('p99_ms'), '.3f')} ms"
            for k in tools
        ),
    )
    t.add_row(
        "added at p50",
        f"< {ADDED_P50_MAX_MS:g} ms",
        *(cell(lat[k], "added_p50_ms", "+.3f", " ms") for k in tools),
    )
    t.add_row(
        "added at p99",
        f"< {ADDED_P99_MAX_MS:g} ms",
        *(cell(lat[k], "added_p99_ms", "+.3f", " ms") for k in tools),
    )
    t.add_row(CORE_ROW, "", *(core_cell(lat[k]) for k in tools))
    t.add_section()
    t.add_row(f"[b]4. stall {STALL_S:g} s every {STALL_EVERY_S:g} s, 200 req/s[/b]", "", "", "", "")
    t.add_row(
        "true p90 / p99 (ideal client)",
        "",
        f"{st['ours']['true_p90_ms']:.1f} / {st['ours']['true_p99_ms']:.1f} ms",
        "",
        "",
    )
    t.add_row("measured p90", "within 10%", *(cell(st[k], "p90_ms", ".1f", " ms") for k in tools))
    t.add_row("measured p99", "within 10%", *(cell(st[k], "p99_ms", ".1f", " ms") for k in tools))
    true90, true99 = st["ours"]["true_p90_ms"], st["ours"]["true_p99_ms"]
    t.add_row(
        "measured / true p90, p99",
        "0.90-1.10",
        *(
            "[red]error[/red]"
            if "error" in st[k]
            else f"x{st[k]['p90_ms'] / true90:.3f}, x{st[k]['p99_ms'] / true99:.3f}"
            for k in tools
        ),
    )
    t.add_row(CORE_ROW, "", *(core_cell(st[k]) for k in tools))
    console.print(t)

    ch = r.get("checks")
    if ch:
        us = ch["us_per_request"]
        ct = Table(title="Our engine: client CPU of checking answers during load (closed loop "
                         "c=32, null server, median of interleaved runs)")  # fmt: skip
        for col in ("answer check", "us/request", "added"):
            ct.add_column(col, justify="right" if col != "answer check" else "left")
        ct.add_row("none (status and framing only)", f"{us['none']:.2f}", "")
        ct.add_row("every body's length", f"{us['length']:.2f}", f"{ch['added_us_length']:+.2f} us")
        ct.add_row(f"default: every length, every {ch['every']}th body decoded",
                   f"{us['default']:.2f}", f"{ch['added_us_default']:+.2f} us")  # fmt: skip
        ct.add_row("every body decoded", f"{us['every']:.2f}", f"{ch['added_us_every']:+.2f} us")
        console.print(ct)

    lt = Table(title="Our engine, open loop ladder against the null server (constant arrivals)")
    for col in (
        "rate",
        "sent/asked",
        "send-lag p99",
        "client CPU",
        "us/request",
        "server CPU",
        "cores busy (not ours)",
        "p50 / p99",
        "held",
        "note",
    ):
        lt.add_column(col, justify="right" if col not in ("note",) else "left")
    for s in rate["steps"]:
        note = []
        if not s["held"] or s["server_limited"] or s["client_cpu_pct"] >= CLIENT_BUSY_PCT:
            note.append(s["limited_by"])
        if s["errors"]:
            note.append(f"{s['errors']} errors")
        lt.add_row(
            f"{s['rate']:,.0f}/s",
            f"{s['achieved_rate_ratio']:.3f}",
            f"{s['send_lag_p99_ms']:.3f} ms",
            f"{s['client_cpu_pct']:.0f}%",
            f"{s['cpu_us_per_req']:.1f}",
            f"{s['server_cpu_pct']:.0f}%",
            core_cell(s),
            f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f} ms",
            "yes" if s["held"] else "[red]no[/red]",
            ", ".join(note),
        )
    console.print(lt)

    tt = Table(title="Targets (our engine)")
    tt.add_column("target")
    tt.add_column("figure", justify="right")
    tt.add_column("verdict")
    for row in r["targets"]:
        tt.add_row(row["target"], row["figure"], verdict(row["pass"]))
    console.print(tt)

    for note in r["notes"]:
        console.print(f"- {note}")


def build_notes(r: dict[str, Any]) -> list[str]:
    notes = []
    for k in ("ours", "locust", "wrk"):
        res = r["cpu"].get(k, {})
        if "error" in res:
            notes.append(f"{k} (CPU test) failed: {res['error']}")
        else:
            res["limited_by"] = limit_of(res)
            notes.append(f"closed loop req/s, {k}: limited by {res['limited_by']}")
    notes.append(f"open loop ladder limited by: {r['rate']['limited_by']}")
    notes.append(
        "locust CPU: process_time over the measured window (after spawning and "
        "warm-up), import and spawn-up excluded; wrk CPU: rusage of the whole process"
    )
    notes.append(
        "wrk 4 back-fills its histogram (stats_correct: synthetic samples every "
        "runtime/(requests per connection) below each long one) before done(), so "
        "its percentiles are not raw; locust latencies are raw events.request times"
    )
    notes.append(
        "locust has no fixed-rate open loop: constant_throughput is closed loop per "
        "user (a stalled user waits); wrk has no rate at all (wrk2 not packaged), so "
        "its latencies are closed loop, measured from its own send"
    )
    notes.append(
        "stall truth: per request, (stall remaining at its intended time) + "
        f"{STALL_DELAY_MS:g} ms, with the server's stall clock from its printed t0; "
        "locust/wrk ratios are against the same truth for contrast"
    )
    for part in ("latency", "stall"):
        for k in ("locust", "wrk"):
            if "error" in r[part][k]:
                notes.append(f"{k} ({part} test) failed: {r[part][k]['error']}")
    shared = []
    for part in ("cpu", "latency", "stall"):
        for k in ("ours", "locust", "wrk"):
            client_other, server_other = other_load(r[part].get(k, {}))
            if max(client_other, server_other) > OTHER_LOAD_PCT:
                shared.append(f"{part}/{k} ({client_other:.0f}% / {server_other:.0f}%)")
    if shared:
        notes.append(
            f"cores busy with work other than the client/server process (> {OTHER_LOAD_PCT:g}% "
            f"of core {CLIENT_CPU} / core {SERVER_CPU}; other processes or softirq) during: "
            + ", ".join(shared)
            + ": latency tails there include preemption, not only the tool"
        )
    return notes


# --------------------------------------------------------------------------- main


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short measurements (~1 min)")
    parser.add_argument(
        "--json",
        default=str(ROOT / "results" / "loadgen_bench.json"),
        help="where to write the figures as JSON",
    )
    args = parser.parse_args(argv)

    cpus = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= cpus:
        print(
            f"needs CPUs {SERVER_CPU} and {CLIENT_CPU}; this process may use {sorted(cpus)}",
            file=sys.stderr,
        )
        return 2
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} not found on PATH", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)

    if args.quick:
        cpu_dur, lat_dur, stall_dur, warm = 3, 3, 5, 0.5
        rates, rate_dur = [5_000.0, 10_000.0], 2.0
        check_dur, check_rounds = 1.5, 3
    else:
        cpu_dur, lat_dur, stall_dur, warm = 5, 10, 10, 1.0
        rates, rate_dur = [2_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0], 4.0
        check_dur, check_rounds = 3.0, 5

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "body": BODY.decode(),
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
        }
    }
    lp: LoadProcess | None = None
    with tempfile.TemporaryDirectory(prefix="loadgen_bench-") as tmp:
        workdir = Path(tmp)
        try:
            lp = LoadProcess([CLIENT_CPU])
            with console.status("1/5 client CPU, closed loop c=32 ..."):
                results["cpu"] = part_cpu(lp, workdir, cpu_dur, warm)
            with console.status("2/5 open-loop rate ladder ..."):
                results["rate"] = part_rate(lp, workdir, rates, rate_dur, warm / 2)
            with console.status("3/5 added latency, 200 req/s, 5 ms server ..."):
                results["latency"] = part_latency(lp, workdir, lat_dur, warm)
            with console.status("4/5 stall test ..."):
                results["stall"] = part_stall(lp, workdir, stall_dur, warm)
            with console.status("5/5 client cost of the answer checks ..."):
                results["checks"] = part_checks(lp, workdir, check_dur, warm / 2, check_rounds)
        except KeyboardInterrupt:
            console.print("[red]interrupted: children killed[/red]")
            return 130
        finally:
            if lp is not None:
                lp.close()

    results["targets"] = build_targets(results)
    results["notes"] = build_notes(results)
    results["meta"]["elapsed_s"] = time.perf_counter() - started
    results["meta"]["loadavg_end"] = os.getloadavg()
    render(console, results)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    console.print(f"figures written to {path} ({results['meta']['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
