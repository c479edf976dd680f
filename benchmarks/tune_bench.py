"""Does the search find a near-best configuration in a fraction of the exhaustive time?

One stack (FastAPI serving the digits CNN as ONNX, one server CPU), a grid of 24
configurations (dynamic batch size 1, 2, 4, 8, 16, 32 x batcher delay 0.5, 1, 2, 4 ms; a
batch of 1 is no batcher), the objective of `scenarios/digits-tune.yaml` (most requests/s
at p99 <= 20 ms, closed loop at concurrency 16). First every configuration is measured
(Optuna's GridSampler, no probe); then TPE (with the short probe that ends clearly worse
trials) gets 30% of the time the grid took. Each trial in both is a real launch and
measurement through the runner. The search's pick is judged by what the exhaustive run
measured for that same configuration, against the exhaustive best.

    nox -s tune_bench                 # or: PYTHONPATH=. python benchmarks/tune_bench.py
    python benchmarks/tune_bench.py --share 0.3 --seed 0 --out /tmp/tune-bench
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.scenario import parse_scenario
from harness.tuning import TrialResult, tune_scenario

SCENARIO = """
name: tune-bench
model: {name: digits-cnn}
slo: {latency_ms: 20, percentile: 99}
resources: {server_cpus: [0], client_cpus: [1]}
fidelity: {samples: 16}
load:
  warmup_s: 0.2
  duration_s: 1.5
  max_duration_s: 3
  target_warmup_s: 0.3
  profile: {kind: closed, concurrency: [16]}
targets:
  - name: fastapi-onnx
    adapter: {kind: fastapi}
    variant: onnx
tune:
  objective: {kind: max_throughput}
  search: {kind: grid, trials: 24, probe_s: null}
  budget_s: 3600
  repeats: 1
  stacks:
    - target: fastapi-onnx
      fixed: [workers]
      space:
        batching.max_batch_size: [1, 2, 4, 8, 16, 32]
        batching.max_delay_ms: [0.5, 1.0, 2.0, 4.0]
"""


def key(params: dict[str, Any]) -> tuple[Any, ...]:
    """A configuration as it runs: a batch of one ignores its delay (no batcher)."""
    size = params.get("batching.max_batch_size")
    delay = None if size == 1 else float(params.get("batching.max_delay_ms", 0))
    return (size, delay)


def search(sets: list[str], out: Path) -> tuple[float, list[TrialResult], Path]:
    scenario = parse_scenario(SCENARIO, source="tune_bench", sets=sets)
    began = time.monotonic()
    outcome = tune_scenario(scenario, out_root=out, remeasure=False)
    return time.monotonic() - began, outcome.trials, outcome.run_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.3, help="TPE's time / the grid's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tune-bench-"))

    print("exhaustive grid: 24 configurations of fastapi-onnx, each launched and measured ...",
          flush=True)  # fmt: skip
    grid_s, grid_trials, grid_dir = search([], out)
    measured = {key(t.params): t.value for t in grid_trials if t.state == "complete"}
    best_grid = max((t for t in grid_trials if t.state == "complete"),
                    key=lambda t: t.value or 0.0)  # fmt: skip
    assert best_grid.value, "the grid measured nothing within the SLO"

    # the search's own budget counts trials; what is not trials (the model, the variant,
    # the load processes) comes off it, so the whole TPE run takes `share` of the grid's
    overhead = max(0.0, grid_s - sum(t.seconds for t in grid_trials))
    budget = args.share * grid_s - overhead
    print(f"TPE: {args.share:.0%} of the grid's {grid_s:.0f} s: a {budget:.0f} s trial budget "
          f"(+ {overhead:.0f} s set-up) ...", flush=True)  # fmt: skip
    sets = ["tune.search.kind=tpe", "tune.search.probe_s=0.5", "tune.search.startup_trials=3",
            f"tune.search.seed={args.seed}", f"tune.budget_s={budget:.1f}"]  # fmt: skip
    tpe_s, tpe_trials, tpe_dir = search(sets, out)
    done = [t for t in tpe_trials if t.state == "complete"]
    assert done, "TPE finished no trial within its budget"
    best_tpe = max(done, key=lambda t: t.value or 0.0)
    as_grid = measured.get(key(best_tpe.params))

    rows = [
        ("exhaustive grid", grid_s, len(grid_trials), best_grid),
        ("TPE + probe", tpe_s, len(tpe_trials), best_tpe),
    ]
    print()
    print(f"{'search':16} {'time (s)':>9} {'trials':>7} {'best (req/s)':>13}  configuration")
    for name, seconds, trials, best in rows:
        print(f"{name:16} {seconds:9.1f} {trials:7d} {best.value or 0:13,.0f}  "
              f"{json.dumps(best.params)}")  # fmt: skip
    pruned = sum(t.state == "pruned" for t in tpe_trials)
    print(f"TPE trials: {len(done)} complete, {pruned} pruned after the probe")
    time_ratio = tpe_s / grid_s
    print(f"time: TPE / grid = {tpe_s:.1f} / {grid_s:.1f} s = {time_ratio:.2f}")
    if as_grid is not None:
        result_ratio = as_grid / best_grid.value
        print(f"result: the exhaustive run measured TPE's pick at {as_grid:,.0f} req/s, "
              f"{result_ratio:.3f} x the exhaustive best "
              f"({best_grid.value:,.0f} req/s)")  # fmt: skip
    else:
        result_ratio = (best_tpe.value or 0.0) / best_grid.value
        print(f"result: TPE's best / the exhaustive best = {result_ratio:.3f}")
    print(f"result (each as its own search measured it): {best_tpe.value or 0:,.0f} / "
          f"{best_grid.value:,.0f} = {(best_tpe.value or 0) / best_grid.value:.3f}")  # fmt: skip
    ok = result_ratio >= 0.95 and time_ratio <= 0.30 + 1e-9
    print(f"within 5% of the exhaustive best in at most 30% of its time: {'yes' if ok else 'NO'}")
    print(f"run folders: {grid_dir}  {tpe_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
