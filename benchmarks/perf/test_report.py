"""The report of a large run: 10 targets x 10 load levels x 100k requests each.

The run folder is written once per session (`large_run`). Verdicts are benchmarked on
their own (the runner writes them at the end of a run; a report of a run without them
computes them on the fly), then the report is rendered from the folder as it is after a
finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.report import render_report
from harness.verdicts import write_verdicts


def test_verdicts_large_run(benchmark: Any, large_run: Path, figures: dict[str, str]) -> None:
    path = benchmark.pedantic(write_verdicts, args=(large_run,), rounds=1, iterations=1)
    assert path.exists() and path.stat().st_size > 0
    figures["verdicts, 10 targets x 10 levels x 100k"] = f"{benchmark.stats.stats.mean:.1f} s"


def test_render_report_large_run(
    benchmark: Any, large_run: Path, tmp_path: Path, figures: dict[str, str]
) -> None:
    if not (large_run / "verdicts.csv").exists():  # run alone: as the runner leaves it
        write_verdicts(large_run)
    out = tmp_path / "report.html"
    written = benchmark.pedantic(render_report, args=(large_run, out), rounds=3, iterations=1)
    size = written.stat().st_size
    assert size > 100_000 and "target-09" in written.read_text()
    benchmark.extra_info["html_bytes"] = size
    figures["report, 10 targets x 10 levels x 100k"] = (
        f"{benchmark.stats.stats.mean:.1f} s, {size / 1e6:.1f} MB HTML"
    )
