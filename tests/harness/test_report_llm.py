"""The report's LLM serving section and the LLM answers of summary.json, from synthetic run
folders: steps.csv rows carrying token metrics, and one target whose stack is not installed."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from harness import columns
from harness.cost import usd_per_million_tokens
from harness.report import render_report
from harness.results import RunFolder
from harness.summary import build_summary, write_summary
from tests.harness.test_report import (
    EVIL_TARGET,
    _base_folder,
    _section,
    _step_row,
    _target,
    assert_specs_draw,
    own_scripts_only,
)

NAN = float("nan")
SKIP_REASON = "adapter vllm is not available here: run `servingbench env vllm` <b>first</b>"
# (label, mode, level): three closed-loop concurrencies, then one open-loop rate
LEVELS = (("closed c=1", "closed", 1), ("closed c=4", "closed", 4), ("closed c=8", "closed", 8),
          ("open 10/s", "open", 10))  # fmt: skip
# per target and level: (output tok/s, goodput fraction, TTFT p90, TTFT p99, ITL p99)
PERF = {
    "llamacpp-q8_0": [(100.0, 1.0, 15.0, 20.0, 4.0), (350.0, 1.0, 30.0, 40.0, 6.0),
                      (600.0, 0.9, 250.0, 300.0, 30.0), (300.0, 1.0, 40.0, 50.0, 5.0)],
    EVIL_TARGET: [(80.0, 1.0, 20.0, 25.0, 5.0), (300.0, 1.0, 35.0, 45.0, 7.0),
                  (500.0, 1.0, 60.0, 90.0, 9.0), (250.0, 1.0, 45.0, NAN, 6.0)],
}  # fmt: skip
LLM_FIELDS = [
    "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "ttft_mean_ms", "itl_p50_ms", "itl_p99_ms",
    "tpot_mean_ms", "tpot_p50_ms", "tpot_p99_ms", "output_tokens_per_s", "prompt_tokens_per_s",
    "output_tokens_mean", "prompt_tokens_mean", "llm_goodput_rps", "llm_goodput_fraction",
    "slo_ttft_ms", "slo_tpot_ms", "server_output_tokens", "server_prompt_tokens",
    "server_prefill_ms", "server_decode_ms",
]  # fmt: skip
USD_PER_HOUR = 3.6


def _llm_row(target: str, step: int, slo: bool = True) -> dict[str, Any]:
    label, mode, level = LEVELS[step]
    tokens, fraction, ttft_p90, ttft_p99, itl_p99 = PERF[target][step]
    rps = tokens / 32
    row = _step_row(
        target,
        0,
        0,
        rps,
        ttft_p99 + 200,
        adapter="llamacpp",
        variant="q8_0",
        level=level,
        label=label,
        mode=mode,
        concurrency=level if mode == "closed" else None,
        requested_rate=level if mode == "open" else None,
        slo_ms=2000.0,
        slo_percentile_ms=ttft_p99 + 200,
    )
    server = target == "llamacpp-q8_0"
    return {
        **row,
        "step": step,
        "ttft_p50_ms": ttft_p90 / 2,
        "ttft_p90_ms": ttft_p90,
        "ttft_p99_ms": ttft_p99,
        "ttft_mean_ms": ttft_p90 / 1.8,
        "itl_p50_ms": itl_p99 / 2,
        "itl_p99_ms": itl_p99,
        "tpot_mean_ms": itl_p99 / 1.5,
        "tpot_p50_ms": itl_p99 / 1.6,
        "tpot_p99_ms": itl_p99,
        "output_tokens_per_s": tokens,
        "prompt_tokens_per_s": tokens * 2,
        "output_tokens_mean": 32.0,
        "prompt_tokens_mean": 80.0,
        "llm_goodput_rps": rps * fraction,
        "llm_goodput_fraction": fraction,
        "slo_ttft_ms": 250.0 if slo else NAN,
        "slo_tpot_ms": 25.0 if slo else NAN,
        "server_output_tokens": tokens * 4 if server else NAN,
        "server_prompt_tokens": tokens * 8 if server else NAN,
        "server_prefill_ms": 3.0 if server else NAN,
        "server_decode_ms": 20.0 if server else NAN,
    }


def _write_steps(folder: RunFolder, rows: list[dict[str, Any]]) -> None:
    """steps.csv as the runner writes it for LLM steps: the usual columns, then the tokens'."""
    assert set(LLM_FIELDS) <= set(columns.names())  # every token figure has its column
    for row in rows:
        folder.append_step(row)


def _llm_folder(tmp_path: Path, slo: bool = True, p99: bool = True) -> RunFolder:
    folder = _base_folder(tmp_path)
    run = folder.read_run()
    run["scenario"]["slo"] = {"latency_ms": 2000.0, "percentile": 99.0}
    if slo:
        run["scenario"]["slo"].update(ttft_ms=250.0, tpot_ms=25.0)
    run["scenario"]["cost"] = {"usd_per_hour": USD_PER_HOUR}
    folder.write_run(run)
    folder.write_model({"name": "tiny-llama", "parameters": 5_500_000})
    folder.write_variants([])
    folder.write_workload(
        {"api": "completions", "requests": 128, "prompt_tokens_mean": 80.0,
         "output_tokens_mean": 32.0},
    )  # fmt: skip
    for name in PERF:
        folder.update_target(name, _target(name, adapter="llamacpp", variant="q8_0"))
    folder.update_target(
        "vllm-bf16",
        _target("vllm-bf16", adapter="vllm", variant="bf16", status="unavailable",
                error=SKIP_REASON, fidelity=None, startup_s=None),
    )  # fmt: skip
    rows = [_llm_row(name, step, slo) for name in PERF for step in range(len(LEVELS))]
    if not p99:
        rows = [{**r, "ttft_p99_ms": NAN} for r in rows]
    _write_steps(folder, rows)
    return folder


def test_llm_section_has_charts_table_and_skipped_target(tmp_path: Path) -> None:
    folder = _llm_folder(tmp_path)
    html = render_report(folder.path).read_text(encoding="utf-8")
    section = _section(html, "llm")
    assert "<h2>LLM serving</h2>" in section
    assert "TTFT &le; 250.0 ms, TPOT &le; 25.0 ms" in section
    assert "128 requests (completions API)" in section and "output tokens mean 32.0" in section
    for chart in ("ttft", "itl", "tokens"):  # interactive, and drawable
        assert f'id="vl-llm{chart}"' in section
    assert "data:image/png" not in section
    assert_specs_draw(section)
    still = render_report(folder.path, folder.path / "static.html", static=True).read_text()
    pngs = re.findall(r'<img class="chart"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"',
                      _section(still, "llm"))  # fmt: skip
    assert len(pngs) == 3 and all(base64.b64decode(p)[:4] == b"\x89PNG" for p in pngs)
    for chart in ("ttft", "itl", "tokens"):
        assert f'id="chart-llm{chart}"' in still
    # the table: one row per target x step, sortable, with the server's token count
    table = section[section.index('id="llm-table"') :]
    assert '<table class="sortable" id="llm-table">' in section
    assert table.count("<tr><td>") == len(PERF) * len(LEVELS)
    for header in ("TTFT p90 (ms)", "ITL p99 (ms)", "TPOT mean (ms)", "output tok/s",
                   "goodput fraction", "server output tokens (per step)"):  # fmt: skip
        assert f"<th>{header}</th>" in table
    assert '<td class="n" data-v="600.0">600.0</td>' in table  # output tok/s
    assert '<td class="n" data-v="2400.0">2,400</td>' in table  # server output tokens
    assert '<td class="n" data-v="0.9">90.0%</td>' in table  # goodput fraction
    assert '<td class="n" data-v="">\u2013</td>' in table  # a NaN p99 is a dash, sorted last
    # the hostile name is escaped everywhere, the skip reason too
    assert "<td>t&lt;img src=x onerror=alert(1)&gt;</td>" in table
    assert "<img src=x onerror" not in html and "<b>first</b>" not in html
    assert own_scripts_only(html)
    # the target whose stack is not installed: skipped with its reason, never "failed"
    reason = (
        "adapter vllm is not available here: run `servingbench env vllm` &lt;b&gt;first&lt;/b&gt;"
    )
    assert f"vllm-bf16: skipped ({reason})" in section
    problems = _section(html, "problems")
    assert "Target vllm-bf16: skipped" in problems and f"<pre>{reason}</pre>" in problems
    targets = _section(html, "targets")
    assert (
        f'<td class="status-unavailable">skipped <span class="muted">({reason})</span>' in targets
    )
    assert "vllm-bf16: failed" not in html and "Target vllm-bf16: unavailable" not in html
    assert "vllm-bf16" not in table


def test_llm_answers_in_summary_json_and_report(tmp_path: Path) -> None:
    folder = _llm_folder(tmp_path)
    write_summary(folder.path)
    summary = json.loads((folder.path / "summary.json").read_text())
    winners = summary["winners"]
    # q8_0 reached 600 tok/s at c=8, but only 90% of generations met the SLO there
    tokens = winners["highest_output_tokens_within_slo"]
    assert tokens == {"target": EVIL_TARGET, "value": 500.0, "caveats": []}
    assert winners["lowest_ttft"] == {
        "target": "llamacpp-q8_0",
        "value": 20.0,
        "caveats": [],
        "metric": "ttft_p99_ms",
    }
    cheapest = winners["cheapest_per_million_output_tokens"]
    assert cheapest["target"] == EVIL_TARGET and cheapest["value"] == pytest.approx(2.0)
    q8 = summary["targets"]["llamacpp-q8_0"]
    assert q8["output_tokens_per_s_within_slo"] == 350.0 and q8["tokens_at_level"] == "closed c=4"
    assert q8["usd_per_million_output_tokens"] == pytest.approx(usd_per_million_tokens(350, 3.6))
    assert usd_per_million_tokens(500.0, USD_PER_HOUR) == pytest.approx(2.0)
    assert math.isnan(usd_per_million_tokens(0.0, USD_PER_HOUR))
    skipped = summary["targets"]["vllm-bf16"]
    assert skipped["status"] == "unavailable"
    assert skipped["caveats"] == [f"skipped ({SKIP_REASON})"]
    # the existing answers keep their shape
    assert set(winners["lowest_p99"]) == {"target", "value", "caveats"}

    html = render_report(folder.path).read_text(encoding="utf-8")
    answers = _section(html, "cost")
    assert (
        "<tr><th>Highest output tokens/s within the TTFT/TPOT SLO</th><td><strong>"
        "t&lt;img src=x onerror=alert(1)&gt;</strong> (500.0 tok/s)" in answers
    )
    assert "<tr><th>Lowest TTFT p99</th><td><strong>llamacpp-q8_0</strong> (20.00 ms)" in answers
    assert "<th>Cheapest per million output tokens</th>" in answers and "($2.00)" in answers
    cost = _section(html, "cost")
    assert "<th>per million output tokens</th>" in cost and ">$2.86<" in cost
    decision = _section(html, "decision")
    assert "Run t&lt;img src=x onerror=alert(1)&gt;." in decision
    assert (
        "500 output tok/s within the token SLO (TTFT \u2264 250 ms, TPOT \u2264 25 ms" in decision
    )
    assert f"skipped ({SKIP_REASON})".replace("<", "&lt;").replace(">", "&gt;") in cost


def test_without_token_slo_any_valid_step_counts(tmp_path: Path) -> None:
    folder = _llm_folder(tmp_path, slo=False)
    winners = build_summary(folder.path)["winners"]
    assert winners["highest_output_tokens_within_slo"]["target"] == "llamacpp-q8_0"
    assert winners["highest_output_tokens_within_slo"]["value"] == 600.0
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert "(no token SLO set: every success counts)" in _section(html, "llm")


def test_lowest_ttft_falls_back_to_p90_when_no_target_has_a_p99(tmp_path: Path) -> None:
    folder = _llm_folder(tmp_path, p99=False)
    answer = build_summary(folder.path)["winners"]["lowest_ttft"]
    assert answer["metric"] == "ttft_p90_ms"
    assert answer["target"] == "llamacpp-q8_0" and answer["value"] == 15.0
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert "<th>Lowest TTFT p90 (no target has enough samples for a p99)</th>" in html


def test_non_llm_run_has_no_llm_section_or_answers(tmp_path: Path) -> None:
    folder = _base_folder(tmp_path)
    folder.update_target("fast", _target("fast"))
    for step in (0, 1):
        folder.append_step(_step_row("fast", step, 0, 100.0 * (step + 1), 5.0))
    html = render_report(folder.path).read_text(encoding="utf-8")
    assert 'id="llm"' not in html and "LLM serving" not in html and "vl-llm" not in html
    assert "output tokens" not in html and "TTFT" not in html
    summary = build_summary(folder.path)
    assert set(summary["winners"]) == {
        "highest_throughput_under_slo",
        "lowest_p99",
        "cheapest_per_million",
        "smallest_memory",
    }
    assert "output_tokens_per_s_within_slo" not in summary["targets"]["fast"]
