"""One Triton target measured two ways: NVIDIA's perf_analyzer and servingbench's engine.

    python benchmarks/triton_vs_perf_analyzer.py --perf-analyzer PATH [--cuda-lib-dir DIR]
    python benchmarks/triton_vs_perf_analyzer.py --wheel-dir DIR   (holds tritonclient 2.51.0)
    (or `nox -s perf_analyzer`, which fetches both and installs libb64-0d)

The target is the digits-cnn ONNX variant on Triton's python backend with dynamic batching
(the scenario's `triton-onnx-binary-batch`), server pinned to CPU 0. Both clients are
pinned to CPU 1, send the same 256 test inputs one instance per request over HTTP with
binary tensors, closed loop, at the same concurrency levels, for `--rounds` rounds that
alternate which tool goes first. Per run: throughput and p50/p99 as each tool reports them,
the client's CPU use (cores), and the server's own view of the same run: the success rate
it counted meanwhile (median of 0.5 s samples), average executed batch, queue and compute
time per request. A tool whose figure disagrees with the server's count is the wrong one;
two tools the server agrees with but that differ drove it differently (or the box drifted:
on a shared machine compare rounds before comparing tools).

perf_analyzer (tritonclient 2.51.0 wheel) needs libb64.so.0d (apt `libb64-0d`) and
libcudart.so.12 (pip `nvidia-cuda-runtime-cu12`) to start, even against a CPU server.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.triton import MODEL, TritonAdapter, TritonConfig  # noqa: E402
from harness.launchers.base import LaunchRequest  # noqa: E402
from harness.launchers.process import ProcessConfig, ProcessLauncher  # noqa: E402
from harness.load.plan import StepPlan  # noqa: E402
from harness.load.worker import LoadProcess  # noqa: E402
from harness.models import build_model  # noqa: E402
from harness.models.digits_cnn import DigitsCnnConfig  # noqa: E402
from harness.scenario import VariantsSpec  # noqa: E402
from harness.stats import summarize  # noqa: E402
from harness.variants import build_variant  # noqa: E402

SERVER_CPUS = [0]
CLIENT_CPUS = [1]


def find_perf_analyzer(args: argparse.Namespace, scratch: Path) -> Path:
    if args.perf_analyzer:
        return Path(args.perf_analyzer)
    wheels = sorted(glob.glob(str(Path(args.wheel_dir or ".") / "tritonclient-2.51.0-*.whl")))
    if not wheels:
        sys.exit(
            "no perf_analyzer: pass --perf-analyzer PATH or --wheel-dir with the "
            "tritonclient 2.51.0 wheel (pip download --no-deps tritonclient==2.51.0)"
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith("/bin/perf_analyzer"))
        target = scratch / "perf_analyzer"
        target.write_bytes(wheel.read(member))
    target.chmod(0o755)
    return target


def cuda_lib_dir(args: argparse.Namespace) -> str:
    """Where libcudart.so.12 is: --cuda-lib-dir, else the nvidia-cuda-runtime-cu12 wheel."""
    if args.cuda_lib_dir:
        return str(args.cuda_lib_dir)
    for entry in sys.path:
        folder = Path(entry) / "nvidia" / "cuda_runtime" / "lib"
        if (folder / "libcudart.so.12").exists():
            return str(folder)
    sys.exit("libcudart.so.12 not found: pip install nvidia-cuda-runtime-cu12 or --cuda-lib-dir")


def write_input_data(path: Path, instances: Any) -> Path:
    """perf_analyzer's --input-data: one entry per request, per-instance shape."""
    data = [{"input": {"content": x.ravel().tolist(), "shape": list(x.shape)}} for x in instances]
    path.write_text(json.dumps({"data": data}))
    return path


def run_perf_analyzer(
    binary: Path, libs: str, port: int, concurrency: int, data: Path, args: argparse.Namespace
) -> dict[str, float]:
    report = data.with_name(f"pa-{concurrency}.csv")
    report.unlink(missing_ok=True)
    argv = [str(binary), "-m", MODEL, "-u", f"127.0.0.1:{port}", "-i", "http",
            "--concurrency-range", f"{concurrency}:{concurrency}", "--input-data", str(data),
            "--measurement-interval", str(int(args.window_s * 1000)),
            "--stability-percentage", str(args.stability), "--max-trials", "10",
            "-f", str(report)]  # fmt: skip
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
        p for p in (libs, os.environ.get("LD_LIBRARY_PATH")) if p)}  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=600, check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, CLIENT_CPUS),
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0 or not report.exists():
        # on a shared box perf_analyzer may find no 3 windows within its stability bound
        print(f"perf_analyzer gave no result at c={concurrency}: {done.stdout[-300:]!r}")
        return {"rps": math.nan, "p50_ms": math.nan, "p99_ms": math.nan, "client_cores": cpu / wall}
    with report.open() as fh:
        row = next(csv.DictReader(fh))
    return {"rps": float(row["Inferences/Second"]), "p50_ms": float(row["p50 latency"]) / 1000,
            "p99_ms": float(row["p99 latency"]) / 1000, "client_cores": cpu / wall}  # fmt: skip


def run_ours(load: LoadProcess, endpoint: Any, concurrency: int, duration_s: float) -> dict:
    plan = StepPlan(mode="closed", concurrency=concurrency, duration_s=duration_s, warmup_s=1.0)
    records = load.run(endpoint, plan)
    s = summarize(records)
    if s.errors:
        sys.exit(f"servingbench saw {s.errors} errors at c={concurrency}: {records.error_samples}")
    return {"rps": s.throughput_rps, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
            "client_cores": records.client_cpu_s / records.client_wall_s}  # fmt: skip


class ServerRate(threading.Thread):
    """The server's own count of successes, sampled while a tool runs: its median rate is
    the throughput the server saw, whatever the tool reports."""

    def __init__(self, adapter: TritonAdapter, server: Any) -> None:
        super().__init__(daemon=True)
        self.adapter, self.server = adapter, server
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            count = self.adapter.server_metrics(self.server)["success"]
            self.samples.append((time.perf_counter(), count))

    def stop(self) -> float:
        self.done.set()
        self.join()
        times, counts = np.array(self.samples).T if self.samples else (np.zeros(0),) * 2
        rates = np.diff(counts) / np.diff(times)
        steady = rates[2:] if len(rates) > 4 else rates  # skip ramp-up and start-up
        return float(np.median(steady)) if len(steady) else math.nan


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (/proc/stat, idle and iowait left out)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def our_cpu_s() -> float:
    """CPU seconds of this benchmark: itself, the server, the load process, and the
    perf_analyzer runs already waited for."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def others_cores(seconds: float = 1.0) -> float:
    busy0, ours0 = busy_cpu_s(), our_cpu_s()
    time.sleep(seconds)
    return ((busy_cpu_s() - busy0) - (our_cpu_s() - ours0)) / seconds


def wait_for_quiet(limit: float, max_wait_s: float) -> None:
    """Start a run only once the rest of the machine is (nearly) idle, or give up waiting."""
    deadline = time.monotonic() + max_wait_s
    while (busy := others_cores()) > limit and time.monotonic() < deadline:
        print(f"  waiting: other processes use {busy:.2f} cores", flush=True)
        time.sleep(4.0)


def measure(tool: str, ctx: dict[str, Any], level: int) -> dict[str, float]:
    adapter, server, args = ctx["adapter"], ctx["server"], ctx["args"]
    wait_for_quiet(args.quiet_cores, args.quiet_wait_s)
    before = adapter.server_metrics(server)
    rate = ServerRate(adapter, server)
    busy0, ours0, wall0 = busy_cpu_s(), our_cpu_s(), time.perf_counter()
    rate.start()
    if tool == "perf_analyzer":
        port = server.ports["http"]
        result = run_perf_analyzer(ctx["binary"], ctx["libs"], port, level, ctx["data"], args)
    else:
        result = run_ours(ctx["load"], ctx["endpoint"], level, args.duration_s)
    result["server_rps"] = rate.stop()
    # Everybody else's CPU meanwhile: on a shared 2-core box this is the run's noise
    wall = time.perf_counter() - wall0
    result["others_cores"] = ((busy_cpu_s() - busy0) - (our_cpu_s() - ours0)) / wall
    result.update(adapter.breakdown(before, adapter.server_metrics(server), 0))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf-analyzer", help="the perf_analyzer binary")
    parser.add_argument("--wheel-dir", help="folder holding the tritonclient 2.51.0 wheel")
    parser.add_argument("--cuda-lib-dir", help="folder holding libcudart.so.12")
    parser.add_argument("--levels", default="1,4,16", help="closed-loop concurrencies")
    parser.add_argument("--rounds", type=int, default=2, help="runs per tool and level")
    parser.add_argument("--duration-s", type=float, default=6.0, help="our measured window")
    parser.add_argument("--window-s", type=float, default=2.0, help="perf_analyzer window")
    parser.add_argument("--stability", type=int, default=20, help="perf_analyzer -s (%%)")
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.25,
        help="wait before each run until other processes use less",
    )
    parser.add_argument("--quiet-wait-s", type=float, default=120.0, help="but no longer")
    parser.add_argument("--json", help="also write every run here")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="sb-pa-"))
    ctx: dict[str, Any] = {"args": args, "binary": find_perf_analyzer(args, scratch),
                           "libs": cuda_lib_dir(args)}  # fmt: skip
    bundle = build_model(DigitsCnnConfig(name="digits-cnn"))
    variant = build_variant("onnx", bundle, VariantsSpec())
    instances = bundle.x_test[:256]
    ctx["data"] = write_input_data(scratch / "inputs.json", instances)
    batching = {"max_queue_delay_us": 2000}
    config = TritonConfig(kind="triton", protocol="http-binary", dynamic_batching=batching)  # type: ignore[arg-type]
    adapter = ctx["adapter"] = TritonAdapter(config)
    launcher = ProcessLauncher(ProcessConfig())
    request = LaunchRequest("triton", adapter, variant, scratch / "work", scratch / "triton.log",
                            SERVER_CPUS, len(SERVER_CPUS), 300)  # fmt: skip
    server = ctx["server"] = launcher.start(request)
    runs: list[dict[str, Any]] = []
    try:
        ctx["endpoint"] = adapter.client(server).endpoint(instances)
        with LoadProcess(CLIENT_CPUS) as load:
            ctx["load"] = load
            load.run(ctx["endpoint"], StepPlan(mode="closed", concurrency=4, duration_s=2.0))
            for level in (int(c) for c in args.levels.split(",")):
                for round_ in range(args.rounds):  # alternate who goes first: drift hits both
                    tools = TOOLS if round_ % 2 == 0 else TOOLS[::-1]
                    for tool in tools:
                        run = {"tool": tool, "concurrency": level, **measure(tool, ctx, level)}
                        runs.append(run)
                        print(format_run(run), flush=True)
    finally:
        launcher.stop(server)
    print("\nmedians over rounds")
    for level in dict.fromkeys(r["concurrency"] for r in runs):
        for tool in TOOLS:
            mine = [r for r in runs if r["tool"] == tool and r["concurrency"] == level]
            keys = [k for k in mine[0] if k not in ("tool", "concurrency")]
            row = {k: float(np.nanmedian([r.get(k, math.nan) for r in mine])) for k in keys}
            print(format_run({"tool": tool, "concurrency": level, **row}))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


TOOLS = ["perf_analyzer", "servingbench"]


def format_run(r: dict[str, Any]) -> str:
    return (
        f"c={r['concurrency']:>3} {r['tool']:>13}: {r['rps']:7.0f} req/s "
        f"(server saw {r['server_rps']:7.0f})  p50 {r['p50_ms']:6.2f} ms  "
        f"p99 {r['p99_ms']:6.2f} ms  client {r['client_cores']:.2f} cores  "
        f"server batch {r.get('server_batch_avg', math.nan):5.2f} "
        f"queue {r.get('server_queue_ms', math.nan):.2f} ms "
        f"compute {r.get('server_compute_ms', math.nan):.2f} ms  "
        f"others {r['others_cores']:.2f} cores"
    )


if __name__ == "__main__":
    main()
