"""The HTML report: rendered from a synthetic run folder written with the real RunFolder API."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harness.load.records import ERR_NONE, ERR_TIMEOUT, StepRecords
from harness.report import render_report
from harness.results import RunFolder, load_run

EVIL_TARGET = "t<img src=x onerror=alert(1)>"
EVIL_ERROR = "LaunchError: port busy <script>alert(1)</script>"
EVIL_LOG = "starting EVIL\n</pre><script>alert(2)</script>\nbound to 0.0.0.0"
MATH_TARGET = "cost$\\frac{$"  # unbalanced mathtext: matplotlib would fail to draw it raw
DESCRIPTION = "CPU <b>bold</b> & fair\nsecond line"
LABELS = ("closed c=1", "closed c=8")


def _scenario() -> dict[str, Any]:
    return {
        "name": "report-test",
        "description": DESCRIPTION,
        "repeats": 1,
        "slo": {"latency_ms": 20.0, "percentile": 99.0},
        "targets": [{"name": "fast"}, {"name": "slow"}],
    }


def _run_json(status: str = "finished", failures: list[str] | None = None) -> dict[str, Any]:
    return {
        "run_id": "20250101-000000-report-test",
        "scenario_name": "report-test",
        "scenario_file": "scenarios/report-test.yaml",
        "scenario": _scenario(),
        "command": ["servingbench", "run", "scenarios/report-test.yaml"],
        "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": "2025-01-01T00:05:00+00:00",
        "status": status,
        "failures": failures or [],
        "provenance": {
            "versions": {"numpy": "2.0.0", "torch": "2.3.0"},
            "hardware": {"cpu_model": "Test CPU", "cores": 2, "memory_gb": 8.0, "gpus": []},
            "git": {"revision": "abc1234", "dirty": False},
            "hostname": "box",
            "platform": "Linux",
            "python": "3.11.9",
            "seed": 7,
        },
    }


def _target(name: str, **fields: Any) -> dict[str, Any]:
    base = {
        "adapter": "fastapi",
        "variant": "onnx",
        "launcher": "process",
        "settings": {"kind": "fastapi", "workers": 1},
        "status": "ok",
        "error": None,
        "startup_s": 1.25,
        "log": f"logs/{name}.log",
        "fidelity": {
            "passed": True,
            "samples": 64,
            "max_abs_diff": 1e-6,
            "agreement": 1.0,
            "message": "ok",
        },
    }
    return {**base, **fields}


def _step_row(
    target: str, step: int, repeat: int, rps: float, p99: float, **fields: Any
) -> dict[str, Any]:
    row = {
        "target": target,
        "adapter": "fastapi",
        "variant": "onnx",
        "launcher": "process",
        "profile": "closed",
        "level": [1, 8][step],
        "duration_s": 5.0,
        "requests": 1000,
        "errors": 0,
        "throughput_rps": rps,
        "p50_ms": p99 / 3,
        "p90_ms": p99 / 2,
        "p99_ms": p99,
        "max_ms": p99 * 2,
        "mean_ms": p99 / 2.5,
        "client_cpu_pct": 40.0,
        "achieved_rate_ratio": float("nan"),
        "step": step,
        "repeat": repeat,
        "label": LABELS[step],
        "mode": "closed",
        "requested_rate": None,
        "concurrency": [1, 8][step],
        "error_rate": 0.0,
        "goodput_rps": rps,
        "slo_ms": 20.0,
        "send_lag_p99_ms": 0.1,
        "loadgen_saturated": False,
        "loadgen_note": "",
        "connections": [1, 8][step],
        "started_at": "2025-01-01T00:01:00+00:00",
        "p50_ms_ci_low": p99 / 3 * 0.95,
        "p50_ms_ci_high": p99 / 3 * 1.05,
        "p99_ms_ci_low": p99 * 0.9,
        "p99_ms_ci_high": p99 * 1.1,
        "throughput_rps_ci_low": rps * 0.98,
        "throughput_rps_ci_high": rps * 1.02,
        "cv": 0.02,
        "stable": True,
        "valid": True,
        "invalid_reason": "",
        "insufficient": "",
        "slo_percentile_ms": p99,  # the SLO is on p99 here, as the runner writes it
        "server_queue_ms": float("nan"),
        "server_compute_ms": float("nan"),
        "server_batch_avg": float("nan"),
    }
    return {**row, **fields}


def _records(
    n: int, median_ms: float, seed: int, errors: int = 0, spacing_ns: int = 1_000_000
) -> StepRecords:
    rng = np.random.default_rng(seed)
    intended = np.arange(n, dtype=np.int64) * spacing_ns
    latency = (rng.lognormal(np.log(median_ms), 0.3, n) * 1e6).astype(np.int64)
    error = np.zeros(n, dtype=np.int8)
    error[:errors] = ERR_TIMEOUT
    return StepRecords(
        intended_ns=intended,
        sent_ns=intended + 1000,
        end_ns=intended + latency,
        status=np.where(error == ERR_NONE, 200, 0).astype(np.int16),
        error=error,
        warmup_ns=0,
        window_ns=int(intended[-1]) + 1,
        wall_t0=1.7e9,
    )


def _base_folder(tmp_path: Path, status: str = "finished") -> RunFolder:
    folder = RunFolder.create(tmp_path, "20250101-000000-report-test")
    folder.write_run(_run_json(status))
    folder.write_model(
        {"name": "digits-cnn", "key": "abc123", "test_accuracy": 0.977, "parameters": 38282},
    )
    folder.write_variants(
        [
            {
                "name": "onnx",
                "precision": "fp32",
                "artifact": "model.onnx",
                "sha256": "f" * 64,
                "path": "/cache/model.onnx",
                "validation": {
                    "accuracy": 0.977,
                    "reference_accuracy": 0.977,
                    "max_abs_diff": 1e-6,
                    "agreement": 1.0,
                    "status": "ok",
                    "reason": "",
                },
            },
            {
                "name": "onnx-int8",
                "precision": "int8",
                "artifact": "model.int8.onnx",
                "sha256": "e" * 64,
                "path": "/cache/model.int8.onnx",
                "validation": {
                    "accuracy": 0.90,
                    "reference_accuracy": 0.977,
                    "max_abs_diff": 2.9,
                    "agreement": 0.91,
                    "status": "failed",
                    "reason": "accuracy drop 7.7 > 1.0 points",
                },
            },
        ],
    )
    return folder


@pytest.fixture
def full_run(tmp_path: Path) -> Path:
    """Two good targets (fast, slow), one that fails fidelity and is fastest, one hostile name."""
    folder = _base_folder(tmp_path)
    names = ["fast", "slow", "wrong", EVIL_TARGET, MATH_TARGET]
    for name in names:
        fidelity = (
            {
                "passed": False,
                "samples": 64,
                "max_abs_diff": 0.5,
                "agreement": 0.5,
                "message": "top-1 agreement 0.50 < 1.00",
            }
            if name == "wrong"
            else None
        )
        folder.update_target(name, _target(name, **({"fidelity": fidelity} if fidelity else {})))
        folder.log_path(name).write_text(f"log of {name}\n")
    perf = {
        "fast": (1234.5, 4.0),
        "slow": (300.25, 15.0),
        "wrong": (9999.0, 1.0),
        EVIL_TARGET: (500.0, 8.0),
        MATH_TARGET: (600.0, 9.0),
    }
    for i, name in enumerate(names):
        rps, p99 = perf[name]
        for step in (0, 1):
            for repeat in (0, 1):
                # repeats differ so the mean is checkable: 1234.5 is the mean of 1234 and 1235
                bump = -0.5 if repeat == 0 else 0.5
                folder.append_step(_step_row(name, step, repeat, rps * (step + 1) + bump, p99))
                folder.write_records(
                    name, step, repeat, _records(400, p99 / 3, seed=i * 10 + step, errors=3)
                )
    return folder.path


def test_report_has_summary_tables_charts_and_provenance(full_run: Path) -> None:
    out = render_report(full_run)
    assert out == full_run / "report.html"
    html = out.read_text(encoding="utf-8")
    # comparison table: the mean of two repeats, formatted, and the repeat count noted;
    # with repeats the bracket is the range of the per-repeat values, not a pooled CI
    assert "1,234.5" in html and "300.2" in html
    assert "Mean of 2 repeats" in html and "CI per repeat in steps.csv" in html
    assert '1,234.5 <span class="ci">[1,234.0\u20131,235.0]</span>' in html
    # the decision leaves out the target whose fidelity failed, although it was fastest, and
    # qualifies the point estimates with the verdicts (computed here: no verdicts.csv)
    decision = _section(html, "decision")
    assert html.index('id="decision"') < html.index('id="problems"') < html.index('id="matrices"')
    assert "Run fast." in decision and "computed from the records" in decision
    assert not (full_run / "verdicts.csv").exists()
    # every record schedule runs at the same rate, so the lead on throughput is only a tie
    assert "the runner-up, cost$\\frac{$, at closed c=8: not a significant difference" in decision
    assert "0.900 \u00a2 per million inferences" in decision and "as of 2025-01-01" in decision
    assert "wrong" not in decision
    matrices = _section(html, "matrices")
    assert "Not ranked here: wrong (wrong answers (fidelity check failed))" in matrices
    # 400 requests per step are too few for a p99 verdict: said, and no ratio printed for it
    assert "insufficient data" in matrices and "2.24x insufficient" not in matrices
    assert 'title="steps.csv rows ' in matrices  # each figure names its rows
    assert 'id="slo-search"' not in html
    # problems: fidelity failure and failed variant with its reason
    problems = _section(html, "problems")
    assert "top-1 agreement 0.50 &lt; 1.00" in problems
    assert "accuracy drop 7.7 &gt; 1.0 points" in problems
    # every chart drawn by vega-embed from an inline spec, none a PNG; each spec draws
    specs = re.findall(r'<script type="application/json" id="vl-([a-z]+)-spec">', html)
    # (no server telemetry in this folder: no server-load panel)
    assert specs == ["latency", "throughput", "cdf", "concurrency", "timeline", "resources",
                     "accuracy"]  # fmt: skip
    assert "data:image/png" not in html and 'id="chart-' not in html
    assert_specs_draw(html)
    # --static: every chart a PNG, no JavaScript but the table sorter
    still = render_report(full_run, full_run / "static.html", static=True).read_text()
    pngs = re.findall(r'<img class="chart"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"',
                      still)  # fmt: skip
    assert len(pngs) == 2 + len(LABELS) + 4 and "vegaEmbed" not in still
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for chart in ("concurrency", "timeline", "resources", "accuracy"):
        assert f'id="chart-{chart}"' in still
    # variants (drop in points), targets (compact settings), provenance, file listing
    assert "7.70" in html
    assert "<td>workers=1</td>" in html  # settings as a short line, not JSON
    assert "servingbench run scenarios/report-test.yaml" in html and "abc1234" in html
    assert "steps.csv" in html and "records/fast/" in html


def test_report_is_self_contained(full_run: Path) -> None:
    html = render_report(full_run).read_text(encoding="utf-8")
    # the inlined vega bundle names URLs (the SVG namespace, its docs) but loads none: the
    # browser test proves no request leaves the page; everything else names none at all
    assert html.count("window.vegaEmbed=") == 1
    html = without_vega_bundle(html)
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:)[a-z]+:""", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html


def test_hostile_strings_are_escaped(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path, status="failed")
    folder.update_target(
        EVIL_TARGET,
        _target(EVIL_TARGET, status="failed", error=EVIL_ERROR, fidelity=None, startup_s=None),
    )
    folder.log_path(EVIL_TARGET).write_text(EVIL_LOG)
    folder.append_step(
        _step_row(
            EVIL_TARGET, 0, 0, 10.0, 5.0, loadgen_saturated=True, loadgen_note="<i>cpu 100%</i>"
        )
    )
    html = render_report(folder.path).read_text(encoding="utf-8")
    for raw in (
        "<script>alert(1)</script>",
        "<script>alert(2)</script>",
        "<b>bold</b>",
        "<img src=x onerror",
        "<i>cpu 100%</i>",
        "</pre><script>",
    ):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html  # log tail shown
    assert "t&lt;img src=x onerror=alert(1)&gt;" in html
    assert "CPU &lt;b&gt;bold&lt;/b&gt; &amp; fair" in html
    assert "&lt;i&gt;cpu 100%&lt;/i&gt;" in html
    # the only scripts are the report's own
    assert own_scripts_only(html)


def test_failed_target_without_steps_still_renders(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.update_target("fast", _target("fast"))
    folder.update_target(
        "broken",
        _target("broken", status="failed", fidelity=None, error="LaunchError: exited with code 3"),
    )
    folder.log_path("broken").write_text("Traceback\nImportError: no module named foo\n")
    for step in (0, 1):
        folder.append_step(_step_row("fast", step, 0, 100.0, 5.0))
        folder.write_records("fast", step, 0, _records(200, 2.0, seed=step))
    html = render_report(folder.path).read_text(encoding="utf-8")
    problems = _section(html, "problems")
    assert "Target broken: failed" in problems
    assert "<pre>LaunchError: exited with code 3</pre>" in problems
    assert "ImportError: no module named foo" in problems
    comparison = _section(html, "comparison")
    assert "<td>fast</td>" in comparison and "<td>broken</td>" not in comparison
    decision = _section(html, "decision")
    assert "Run fast." in decision and "the only target that could be ranked" in decision


def test_run_without_steps_says_so(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path, status="interrupted")
    folder.update_target("fast", _target("fast", status="running", fidelity=None))
    assert not (folder.path / "steps.csv").exists()
    out = render_report(folder.path, tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html"
    html = out.read_text(encoding="utf-8")
    assert "No steps finished" in html
    assert "Run status is &#39;interrupted&#39;" in html
    assert "Target fast: running" in html
    # no step charts; only the startup time, which was measured before the run stopped
    assert "data:image/png" not in html and 'id="vl-resources"' in html
    assert html.count('<script type="application/json"') == 1
    assert "No closed-loop steps to plot." in html


def test_no_problems_and_saturated_row_left_out_of_ranking(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    variants = load_run(folder.path).variants[:1]  # only the passing variant
    folder.write_variants(variants)
    for name in ("a", "b"):
        folder.update_target(name, _target(name))
        folder.log_path(name).write_text("")
    folder.append_step(_step_row("a", 0, 0, 100.0, 5.0))
    folder.write_records("a", 0, 0, _records(400, 2.0, seed=1, spacing_ns=10_000_000))
    folder.append_step(_step_row("b", 0, 0, 900.0, 2.0))
    folder.write_records("b", 0, 0, _records(3600, 1.0, seed=2, spacing_ns=1_111_111))
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert 'id="problems"' not in html  # none: no empty section either
    assert re.search(
        r"Run b\.</h2>.*8\.9\dx \[8\.9\d\u20138\.9\d\] the throughput of the runner-up, a, at "
        r"closed c=1: significantly better",
        _section(html, "decision"),
        re.DOTALL,
    )

    folder.append_step(
        _step_row(
            "b",
            0,
            1,
            900.0,
            2.0,
            loadgen_saturated=True,
            loadgen_note="client CPU 99%",
            valid=False,
            invalid_reason="client CPU 99%",
        )
    )
    folder.write_records("b", 0, 1, _records(3600, 1.0, seed=3, spacing_ns=1_111_111))
    html = render_report(folder.path).read_text(encoding="utf-8")
    # one repeat of b's level was invalid: the level is out, so a is the one to run
    assert "Run a." in _section(html, "decision")
    assert "Not ranked here: b (" in _section(html, "matrices")
    assert "client CPU 99%" in _section(html, "problems")
    assert "invalid: load generator saturated" in html


def test_baseline_floor_is_shown_but_never_ranked(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.update_target("floor", _target("floor", adapter="inprocess", baseline=True))
    folder.update_target("a", _target("a"))
    folder.append_step(_step_row("floor", 0, 0, 9000.0, 0.2, adapter="inprocess"))
    folder.append_step(_step_row("a", 0, 0, 100.0, 5.0))
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert "Run a." in _section(html, "decision")
    matrices = _section(html, "matrices")
    assert "<td>floor" not in matrices  # a reference line, never a contender row
    assert (
        "Reference, not a contender: the model called in-process without a server "
        "(floor): p50 0.07 ms, p99 0.20 ms, throughput 9,000 req/s." in matrices
    )
    assert "<td>floor</td>" not in _section(html, "cost")  # no server to pay for


def test_unreadable_records_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.update_target("fast", _target("fast"))
    folder.append_step(_step_row("fast", 0, 0, 100.0, 5.0))
    folder.write_records("fast", 0, 0, _records(100, 2.0, seed=0))
    folder.append_step(_step_row("fast", 1, 0, 200.0, 5.0))
    (folder.path / "records" / "fast").joinpath("001-r0.parquet").write_bytes(b"not parquet")
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert "records/fast/001-r0.parquet: unreadable" in html
    # latency, throughput, CDF, throughput vs concurrency, startup, accuracy: all specs
    assert '<img class="chart"' not in html
    assert html.count('<script type="application/json"') == 6
    static = render_report(folder.path, folder.path / "static.html", static=True).read_text()
    assert "No per-request records for this step." in static  # closed c=8 has no CDF
    # two summary charts, one CDF, throughput vs concurrency, startup, accuracy; the timeline
    # of the heaviest step (closed c=8) has no readable records and says so
    assert static.count('<img class="chart"') == 6
    assert 'id="vl-timeline"' not in html and 'id="chart-timeline"' not in static
    assert "fast: records unreadable (" in _section(html, "charts")


def _section(html: str, start: str, end: str | None = None) -> str:
    """From a section's id to `end`'s id, or to the next section."""
    i = html.index(f'id="{start}"')
    j = html.index(f'id="{end}"') if end else html.find("<section", i)
    return html[i : j if j > 0 else None]


def test_two_targets_summary_cites_verdicts_computed_on_the_fly(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.write_variants(load_run(folder.path).variants[:1])
    for name in ("quick", "steady"):
        folder.update_target(name, _target(name))
    # quick: 1000 req/s at ~2 ms; steady: 500 req/s at ~6 ms; enough requests for a p99
    folder.append_step(_step_row("quick", 0, 0, 1000.0, 3.0))
    folder.write_records("quick", 0, 0, _records(2000, 2.0, seed=1, spacing_ns=1_000_000))
    folder.append_step(_step_row("steady", 0, 0, 500.0, 9.0))
    folder.write_records("steady", 0, 0, _records(1000, 6.0, seed=2, spacing_ns=2_000_000))
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert not (folder.path / "verdicts.csv").exists()  # computed in memory, never written
    decision = _section(html, "decision")
    assert "computed from the records" in decision
    assert re.search(r"Run quick\.</h2>.*1,000 req/s within the SLO.*2\.00x \[\d\.\d\d\u2013"
                     r"\d\.\d\d\] the throughput of the runner-up, steady, at closed c=1: "
                     r"significantly better", decision, re.DOTALL)  # fmt: skip
    assert "It also has the lowest p99 (3.00 ms)." in decision
    verdicts = _section(html, "verdicts")
    assert verdicts.count('<span class="verdict v-faster">faster</span>') == 3
    assert 'class="untrusted"' not in verdicts and 'id="problems"' not in html
    assert "server queue (ms)" not in html  # no framework metrics: no server columns


def _verdict(
    a: str, b: str, metric: str, ratio: float, low: float, high: float, word: str, trusted: bool
) -> dict[str, Any]:
    return {
        "label": LABELS[0],
        "target_a": a,
        "target_b": b,
        "metric": metric,
        "value_a": float("nan"),
        "value_b": float("nan"),
        "ratio": ratio,
        "ci_low": low,
        "ci_high": high,
        "verdict": word,
        "trusted": trusted,
    }


def _verdicts_csv(folder: RunFolder) -> None:
    nan, same = float("nan"), "no significant difference"
    rows = [
        # stored as (y, x): the summary must read it from x's side
        _verdict("y", "x", "p50_ms", 1.02, 0.99, 1.05, same, True),
        _verdict("y", "x", "p99_ms", 1.04, 0.97, 1.11, same, True),
        _verdict("y", "x", "throughput_rps", 0.90, 0.855, 0.952, "slower", True),
        _verdict("x", EVIL_TARGET, "p50_ms", 0.5, 0.45, 0.55, "faster", True),
        _verdict("x", EVIL_TARGET, "p99_ms", nan, nan, nan, "insufficient data", True),
        _verdict("x", EVIL_TARGET, "throughput_rps", 1.67, 1.6, 1.7, "faster", True),
        _verdict("wrong", "x", "p50_ms", 0.2, 0.18, 0.22, "faster", False),
        _verdict("wrong", "x", "p99_ms", 0.2, 0.18, 0.22, "faster", False),
        _verdict("wrong", "x", "throughput_rps", 20.0, 19.0, 21.0, "faster", False),
    ]
    pd.DataFrame(rows).to_csv(folder.path / "verdicts.csv", index=False)


def test_verdicts_file_drives_summary_and_section(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    perf = {"x": (500.0, 5.0), "y": (450.0, 5.2), EVIL_TARGET: (300.0, 9.0), "wrong": (9999.0, 1.0)}
    for name, (rps, p99) in perf.items():
        failed = {"passed": False, "samples": 8, "max_abs_diff": 1.0, "agreement": 0.1}
        folder.update_target(
            name, _target(name, **({"fidelity": failed} if name == "wrong" else {}))
        )
        folder.append_step(_step_row(name, 0, 0, rps, p99))
    _verdicts_csv(folder)
    html = render_report(folder.path).read_text(encoding="utf-8")
    decision = _section(html, "decision")
    assert "Verdicts: verdicts.csv." in decision
    assert "Run x.</h2>" in decision
    assert ("1.11x [1.05\u20131.17] the throughput of the runner-up, y, at closed c=1: "
            "significantly better") in decision  # fmt: skip
    matrix = _section(html, "matrices")
    # y against the leader x, read from the file the other way round (x vs y), flipped
    assert "0.90x [0.85\u20130.95] worse" in matrix and "same" in matrix
    assert "Not ranked here: wrong (wrong answers (fidelity check failed))." in matrix
    verdicts = _section(html, "verdicts")
    assert '0.90x [0.85\u20130.95] <span class="verdict v-slower">slower</span>' in verdicts
    assert '<span class="verdict v-same">no significant difference</span>' in verdicts
    assert '<span class="verdict v-faster">faster</span>' in verdicts
    assert '<span class="verdict v-insufficient">insufficient data</span>' in verdicts
    assert verdicts.count('<tr class="untrusted">') == 1
    assert "untrusted: wrong: fidelity check failed" in verdicts
    assert "<td>t&lt;img src=x onerror=alert(1)&gt;</td>" in verdicts
    assert "<img src=x onerror" not in html and own_scripts_only(html)
    assert "No verdicts" not in html  # the file was read, nothing recomputed


def test_unstable_invalid_and_insufficient_rows_are_flagged(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    run = folder.read_run()
    rule = {"window_s": 1.0, "windows": 3, "tolerance": 0.1, "percentile": 99.0}
    run["scenario"]["load"] = {"stability": {**rule, "max_duration_s": 30.0}}
    folder.write_run(run)
    folder.update_target("t", _target("t"))
    nan = float("nan")
    row = _step_row(
        "t",
        0,
        0,
        120.0,
        nan,
        p50_ms=2.31,
        p50_ms_ci_low=2.25,
        p50_ms_ci_high=2.40,
        p90_ms=nan,
        p99_ms_ci_low=nan,
        p99_ms_ci_high=nan,
        stable=False,
        valid=False,
        invalid_reason="server answered 503 <storm>",
        insufficient="p90, p99",
        server_queue_ms=0.75,
        server_compute_ms=1.5,
        server_batch_avg=3.25,
    )
    folder.append_step(row)
    html = render_report(folder.path).read_text(encoding="utf-8")
    comparison = _section(html, "comparison")
    assert '2.31 <span class="ci">[2.25\u20132.40]</span>' in comparison
    assert '120.0 <span class="ci">[117.6\u2013122.4]</span>' in comparison
    assert comparison.count(">n/a*</span>") == 2  # p90 and p99, not a dash
    assert "n/a* = insufficient data" in comparison
    for flag in (
        "unstable",
        "invalid: server answered 503 &lt;storm&gt;",
        "insufficient data: p90, p99",
    ):
        assert f'<span class="flag">{flag}</span>' in comparison
    assert "the last 3 windows of 1 s disagree by more than 10% on throughput or p99" in html
    assert "server queue (ms)" in comparison and ">0.75<" in comparison and ">3.25<" in comparison
    assert "Invalid step: t, closed c=1, repeat 0" in _section(html, "problems")
    assert "Not ranked here: t (server answered 503 &lt;storm&gt;)" in _section(html, "matrices")
    assert "No target can be recommended" in _section(html, "decision")
    assert "No pairwise verdicts" in _section(html, "verdicts")


def _open_row(target: str, step: int, rate: float, p99: float) -> dict[str, Any]:
    row = _step_row(target, 0, 0, rate, p99, mode="open", profile="slo_search")
    open_level = {"level": rate, "requested_rate": rate, "concurrency": None}
    return {**row, **open_level, "step": step, "label": f"open {rate:g}/s"}


def test_slo_search_section_shows_rate_bracket_and_chart(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    search = {"kind": "slo_search", "slo_ms": 20.0, "percentile": 99.0}
    folder.update_target(
        "s1",
        _target(
            "s1",
            search={
                **search,
                "rate": 180.0,
                "bracket": [180.0, 200.0],
                "steps": 4,
                "converged": True,
            },
        ),
    )
    folder.update_target(
        "s2",
        _target(
            "s2",
            search={
                **search,
                "rate": None,
                "bracket": [None, 10.0],
                "steps": 3,
                "converged": False,
            },
        ),
    )
    for step, (rate, p99) in enumerate([(100.0, 8.0), (200.0, 35.0), (150.0, 12.0), (180.0, 18.0)]):
        folder.append_step(_open_row("s1", step, rate, p99))
    for step, rate in enumerate([10.0, 5.0, 2.5]):
        folder.append_step(_open_row("s2", step, rate, 50.0))
    html = render_report(folder.path).read_text(encoding="utf-8")
    section = _section(html, "slo-search")
    assert "<td>s1</td>" in section and "180.0" in section and "[180.0\u2013200.0]" in section
    assert "none met the SLO" in section and "[none passed\u201310.0]" in section
    assert "p99 &le; 20.0 ms" in section
    assert "<td>yes</td>" in section and "<td>no</td>" in section
    assert 'id="vl-search"' in section
    assert_specs_draw(section)
    still = _section(render_report(folder.path, folder.path / "s.html", static=True)
                     .read_text(encoding="utf-8"), "slo-search")  # fmt: skip
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', still)
    assert len(pngs) == 1 and base64.b64decode(pngs[0])[:4] == b"\x89PNG"


def assert_specs_draw(html: str) -> None:
    """Every inline Vega-Lite spec compiles and renders (to SVG, with vl-convert's own
    Vega): a spec the browser could not draw fails here, without a browser."""
    import vl_convert

    specs = re.findall(r'<script type="application/json" id="vl-([a-z]+)-spec">(.*?)</script>',
                       html, re.S)  # fmt: skip
    assert specs
    for key, text in specs:
        svg = vl_convert.vegalite_to_svg(json.loads(text))
        assert svg.startswith("<svg") and "<path" in svg, key


def own_scripts_only(html: str) -> bool:
    """Every <script> in a report is one the report wrote: the vega bundle, the code that
    draws the charts, the table sorter (plain <script>) and the charts' JSON specs. A
    script a server's text smuggled in would be one more, or another kind."""
    tags = re.findall(r"<script[^>]*>", html)
    specs = re.findall(r'<script type="application/json" id="vl-[a-z]+-spec">', html)
    plain = [t for t in tags if t == "<script>"]
    charts = 2 if specs else 0  # the bundle and the code that embeds the specs
    return len(tags) == len(specs) + len(plain) and len(plain) == 1 + charts


STACKS = ("fastapi", "torchserve", "triton", "kserve")


def many_targets_run(tmp_path: Path, count: int) -> Path:
    """A run of `count` targets (and the floor) over three steps, with records for each:
    what the default scenario's report looks like at full size, without running it."""
    folder = _base_folder(tmp_path)
    run = folder.read_run()
    run["scenario"]["targets"] = [{"name": f"t{i:02d}"} for i in range(count)]
    folder.write_run(run)
    folder.update_target("floor", _target("floor", adapter="inprocess", baseline=True))
    labels = ("closed c=1", "closed c=16", "open 500/s poisson")
    names = ["floor", *(f"{STACKS[i % 4]}-{i:02d}" for i in range(count))]
    for i, name in enumerate(names):
        if i:
            folder.update_target(name, _target(name, adapter=STACKS[i % 4]))
        speed = 8.0 if name == "floor" else 1.0 + (i % 7) * 0.15
        for step, label in enumerate(labels):
            mode = "open" if label.startswith("open") else "closed"
            rps = 500.0 if mode == "open" else 300.0 * speed * (step + 1)
            p99 = 12.0 / speed
            row = _step_row(name, min(step, 1), 0, rps, p99, label=label, mode=mode,
                            adapter="inprocess" if name == "floor" else STACKS[i % 4])  # fmt: skip
            folder.append_step({**row, "step": step, "level": [1, 16, 500][step]})
            folder.write_records(name, step, 0, _records(1200, p99 / 3, seed=i * 7 + step,
                                                         spacing_ns=2_000_000))  # fmt: skip
    from harness.verdicts import write_verdicts

    write_verdicts(folder.path)
    return folder.path


def without_vega_bundle(html: str) -> str:
    """The page without its inlined vega bundle (a package's file, which names URLs it never
    loads), for checks on everything the report itself wrote."""
    start = html.index("<script>", html.index("</header>"))
    while "window.vegaEmbed=" not in html[start : html.index("</script>", start)]:
        start = html.index("<script>", start + 1)
    return html[:start] + html[html.index("</script>", start) :]
