"""servingbench's Python API: run a scenario, or read a run folder, as DataFrames.

    import servingbench

    run = servingbench.run("scenarios/digits-cnn.yaml", targets=["floor-eager", "fastapi-onnx"])
    run.decision.headline          # "Run fastapi-onnx."
    run.steps                      # one row per target x step x repeat (steps.csv)
    run.verdicts                   # every pairwise verdict (verdicts.csv)
    run.records("fastapi-onnx")    # every request of every step of that target
    run                            # in a notebook: the decision and its five-row table

    old = servingbench.load_run("results/digits-cnn-20261202-101500")

The command line (`servingbench run`, `report`, ...) is built on the same calls; docs in
docs/python-api.md.
"""

from __future__ import annotations

from servingbench.api import Run, load_run, run

__all__ = ["Run", "load_run", "run"]
