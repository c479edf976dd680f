"""Does `servingbench compare` cry wolf, and does it catch a real regression?

    python benchmarks/gate_bench.py [--pairs 20] [--slower 0.15] [--threshold 0.05]

A small scenario (a null server of known latency behind the plain HTTP adapter, and the
in-process floor as the machine's control; closed loop at concurrency 4; a few repeats of
short steps) is run over and over on this machine:

- pairs of identical runs (same server, same code): a gate failing on one is a false alarm;
- the same base run against a run where the server is `--slower` (15%) slower: a gate that
  passes is a miss.

The runs of a pair are back to back and the three runs of round i are interleaved (base,
same, slower), so the machine's drift over the benchmark hits all three alike. Prints both
shares with 95% Wilson intervals, and the wall time a user pays for one gated run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.loadgen_bench import HOST, Child, free_port  # noqa: E402
from harness.compare import compare  # noqa: E402
from harness.observer import Observer  # noqa: E402
from harness.runner import run_scenario  # noqa: E402
from harness.scenario import parse_scenario  # noqa: E402

SCENARIO = """\
name: gate-bench
model: {{name: digits-cnn}}
dataset: {{samples: 32}}
fidelity: {{samples: 1}}
slo: {{latency_ms: 50, percentile: 50}}
resources: {{server_cpus: [0], client_cpus: [1]}}
repeats: {repeats}
load:
  calibrate: false
  duration_s: {duration}
  warmup_s: 0.2
  target_warmup_s: 0.2
  profile: {{kind: closed, concurrency: [4]}}
targets:
  - name: floor
    adapter: {{kind: inprocess}}
    variant: eager
  - name: service
    adapter: {{kind: http}}
    variant: eager
    launcher: {{kind: external, url: "http://127.0.0.1:{port}"}}
"""
# ten scores: the shape the load engine's answer check expects from this model
OUTPUTS = [[0.0] * 10]


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@contextlib.contextmanager
def server(work: Path, delay_ms: float) -> Iterator[int]:
    """A null server (CPU 0) answering after delay + uniform(0, delay/4) ms: a spread like a
    real model's, so the gate has noise to see through."""
    port = free_port()
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "harness.nullserver", "--host", HOST,
           "--port", str(port), "--delay-ms", str(delay_ms), "--jitter-ms", str(delay_ms / 4),
           "--outputs", json.dumps(OUTPUTS)]  # fmt: skip
    child = Child(cmd, work / f"server-{port}.log")
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"null server did not start: {child.output()[-500:]}"
                    ) from None
                time.sleep(0.05)
        yield port
    finally:
        child.kill()


def one_run(port: int, out: Path, repeats: int, duration: float) -> tuple[Path, float]:
    text = SCENARIO.format(port=port, repeats=repeats, duration=duration)
    start = time.monotonic()
    outcome = run_scenario(parse_scenario(text), out_root=out, observer=Observer())
    return outcome.run_dir, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--slower", type=float, default=0.15, help="the injected regression")
    parser.add_argument("--threshold", type=float, default=0.05, help="the gate's threshold")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=0.8, help="seconds per step")
    parser.add_argument("--delay-ms", type=float, default=4.0, help="the server's latency")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="gate-bench-"))
    alarms, caught, walls, gate_s = 0, 0, [], []
    try:
        with (
            server(work, args.delay_ms) as same,
            server(work, args.delay_ms * (1 + args.slower)) as slow,
        ):
            for i in range(args.pairs):
                base, wall = one_run(same, work / f"{i}-base", args.repeats, args.duration)
                again, _ = one_run(same, work / f"{i}-same", args.repeats, args.duration)
                worse, _ = one_run(slow, work / f"{i}-slow", args.repeats, args.duration)
                walls.append(wall)
                started = time.monotonic()
                false_alarm = compare([base], [again], args.threshold).exit_code() == 1
                gate_s.append(time.monotonic() - started)
                detected = compare([base], [worse], args.threshold).exit_code() == 1
                alarms += false_alarm
                caught += detected
                print(f"pair {i + 1:2d}/{args.pairs}: identical -> "
                      f"{'FALSE ALARM' if false_alarm else 'pass'}; {args.slower:.0%} slower -> "
                      f"{'detected' if detected else 'MISSED'}  (run {wall:.1f} s)",
                      flush=True)  # fmt: skip
                for run in (base, again, worse):
                    shutil.rmtree(run.parent, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = args.pairs
    fa_low, fa_high = wilson(alarms, n)
    d_low, d_high = wilson(caught, n)
    figures = {
        "pairs": n,
        "threshold": args.threshold,
        "slower": args.slower,
        "repeats": args.repeats,
        "step_s": args.duration,
        "false_alarms": alarms,
        "false_alarm_share": alarms / n,
        "false_alarm_ci95": [fa_low, fa_high],
        "detected": caught,
        "detected_share": caught / n,
        "detected_ci95": [d_low, d_high],
        "run_wall_s_median": sorted(walls)[len(walls) // 2],
        "compare_s_median": sorted(gate_s)[len(gate_s) // 2],
    }
    print()
    print(f"gate: {args.repeats} repeats x {args.duration} s steps, threshold {args.threshold:.0%}")
    print(f"false alarms on identical runs: {alarms}/{n} = {alarms / n:.0%} "
          f"[95% CI {fa_low:.0%}-{fa_high:.0%}]  (target <= 5%)")  # fmt: skip
    print(f"{args.slower:.0%} slower server detected: {caught}/{n} = {caught / n:.0%} "
          f"[95% CI {d_low:.0%}-{d_high:.0%}]  (target >= 90%)")  # fmt: skip
    print(f"what a user pays: one gated run {figures['run_wall_s_median']:.1f} s (median), "
          f"the comparison {figures['compare_s_median']:.2f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
