"""The HTML report: rendered from a synthetic run folder written with the real RunFolder API."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.load.records import ERR_NONE, ERR_TIMEOUT, StepRecords
from harness.report import render_report
from harness.results import RunFolder

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
    }
    return {**row, **fields}


def _records(n: int, median_ms: float, seed: int, errors: int = 0) -> StepRecords:
    rng = np.random.default_rng(seed)
    intended = np.arange(n, dtype=np.int64) * 1_000_000
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
    folder.write("run.json", _run_json(status))
    folder.write(
        "model.json",
        {"name": "digits-cnn", "key": "abc123", "test_accuracy": 0.977, "parameters": 38282},
    )
    folder.write(
        "variants.json",
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
    # comparison table: the mean of two repeats, formatted, and the repeat count noted
    assert "1,234.5" in html and "300.2" in html
    assert "Mean of 2 repeats" in html
    # the summary leaves out the target whose fidelity failed, although it was fastest
    summary = html[html.index('id="summary"') : html.index('id="problems"')]
    assert "point estimates" in summary.lower()
    assert "highest throughput <strong>fast</strong> (2,469.0 req/s)" in summary
    assert "lowest p99 <strong>fast</strong>" in summary
    assert "wrong (fidelity check failed)" in summary
    # problems: fidelity failure and failed variant with its reason
    problems = html[html.index('id="problems"') : html.index('id="comparison"')]
    assert "top-1 agreement 0.50 &lt; 1.00" in problems
    assert "accuracy drop 7.7 &gt; 1.0 points" in problems
    # charts: latency/throughput, bars and one CDF per step label, as inline PNG
    pngs = re.findall(r'<img class="chart"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(pngs) == 2 + len(LABELS)
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # variants (drop in points), targets (compact settings), provenance, file listing
    assert "7.70" in html
    assert "{&#34;kind&#34;:&#34;fastapi&#34;,&#34;workers&#34;:1}" in html
    assert "servingbench run scenarios/report-test.yaml" in html and "abc1234" in html
    assert "steps.csv" in html and "records/fast/" in html


def test_report_is_self_contained(full_run: Path) -> None:
    html = render_report(full_run).read_text(encoding="utf-8")
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
    # the only <script> is the report's own sorting code
    assert html.count("<script") == 1


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
    problems = html[html.index('id="problems"') : html.index('id="comparison"')]
    assert "Target broken: failed" in problems
    assert "<pre>LaunchError: exited with code 3</pre>" in problems
    assert "ImportError: no module named foo" in problems
    comparison = html[html.index('id="comparison"') : html.index('id="charts"')]
    assert "<td>fast</td>" in comparison and "<td>broken</td>" not in comparison
    assert "highest throughput <strong>fast</strong>" in html


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
    assert 'src="data:image/png' not in html


def test_no_problems_and_saturated_row_left_out_of_ranking(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    variants = folder.read("variants.json")[:1]  # only the passing variant
    folder.write("variants.json", variants)
    for name in ("a", "b"):
        folder.update_target(name, _target(name))
        folder.log_path(name).write_text("")
    folder.append_step(_step_row("a", 0, 0, 100.0, 5.0))
    folder.append_step(_step_row("b", 0, 0, 900.0, 2.0))
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert "No problems recorded." in html
    assert "highest throughput <strong>b</strong>" in html

    folder.append_step(
        _step_row("b", 0, 1, 900.0, 2.0, loadgen_saturated=True, loadgen_note="client CPU 99%")
    )
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert "highest throughput <strong>a</strong>" in html
    assert "b (load generator saturated)" in html
    assert "client CPU 99%" in html and "No problems recorded." not in html


def test_baseline_floor_is_shown_but_never_ranked(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.update_target("floor", _target("floor", adapter="inprocess", baseline=True))
    folder.update_target("a", _target("a"))
    folder.append_step(_step_row("floor", 0, 0, 9000.0, 0.2, adapter="inprocess"))
    folder.append_step(_step_row("a", 0, 0, 100.0, 5.0))
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert "highest throughput <strong>a</strong>" in html
    assert "floor (baseline (the floor), not a serving stack)" in html


def test_unreadable_records_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.update_target("fast", _target("fast"))
    folder.append_step(_step_row("fast", 0, 0, 100.0, 5.0))
    folder.write_records("fast", 0, 0, _records(100, 2.0, seed=0))
    folder.append_step(_step_row("fast", 1, 0, 200.0, 5.0))
    (folder.path / "records" / "fast").joinpath("001-r0.parquet").write_bytes(b"not parquet")
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert "records/fast/001-r0.parquet: unreadable" in html
    assert "No per-request records for this step." in html  # closed c=8 has no CDF
    assert html.count('<img class="chart"') == 3  # two summary charts, one CDF
