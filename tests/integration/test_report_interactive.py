"""The report in a real browser, driven by Playwright (the Python package, with Debian's
Chromium): offline, the decision on the first screen, charts that answer a hover and a
legend click, tables that sort, no console errors, no network requests, and a page of
sixteen targets that stays short with its details collapsed.

Screenshots of the first screen land in $SERVINGBENCH_SCREENSHOTS when it is set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.report import render_report
from harness.runner import run_scenario
from harness.scenario import parse_scenario

pytestmark = pytest.mark.usefixtures("no_orphans")

VIEW = {"width": 1400, "height": 1000}
MAX_HEIGHT = 12_000  # px at 1400 wide, details collapsed (issue: the old page was 37,200)


def _cpus(index: int) -> str:
    cpus = sorted(os.sched_getaffinity(0))
    return "null" if len(cpus) < 2 else f"[{cpus[index]}]"


SCENARIO = f"""\
name: interactive
model: {{name: digits-cnn}}
dataset: {{samples: 32}}
fidelity: {{samples: 16}}
slo: {{latency_ms: 50, percentile: 90}}
resources: {{server_cpus: {_cpus(0)}, client_cpus: {_cpus(1)}}}
load:
  calibrate: false
  duration_s: 0.8
  warmup_s: 0.2
  target_warmup_s: 0.2
  profile:
    kind: sweep
    steps:
      - {{mode: closed, concurrency: 1}}
      - {{mode: closed, concurrency: 4}}
      - {{mode: open, rate: 150, arrival: poisson}}
targets:
  - name: floor
    adapter: {{kind: inprocess}}
    variant: onnx
  - name: fastapi-onnx
    adapter: {{kind: fastapi}}
    variant: onnx
  - name: fastapi-eager
    adapter: {{kind: fastapi}}
    variant: eager
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (the test extra installs it)"
        print(reason)
        pytest.skip(reason)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        reason = "chromium is not installed (nox -s tests installs Debian's package as root)"
        print(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield found
        found.close()


class Page:
    """A report opened offline: console messages, page errors and requests recorded."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport=VIEW)
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"{m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)  # fmt: skip
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())

    def height(self) -> int:
        return int(self.page.evaluate("document.documentElement.scrollHeight"))

    def remote(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("SERVINGBENCH_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(folder) / f"{name}.png"))


@pytest.fixture(scope="module")
def real_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outcome = run_scenario(parse_scenario(SCENARIO), out_root=tmp_path_factory.mktemp("runs"))
    assert not outcome.failures, outcome.failures
    return render_report(outcome.run_dir)


def test_the_decision_leads_and_the_page_stands_alone(browser: Any, real_report: Path) -> None:
    page = Page(browser, real_report)
    page.page.wait_for_selector("#vl-latency svg", timeout=30_000)
    headline = page.page.locator("#decision-headline")
    box = headline.bounding_box()
    assert box is not None and box["y"] + box["height"] < 1000, box  # on the first screen
    assert headline.inner_text().startswith(("Run fastapi-", "No target"))
    page.screenshot("report-first-screen")
    for key in (
        "latency",
        "throughput",
        "cdf",
        "concurrency",
        "timeline",
        "server",
        "resources",
        "accuracy",
    ):  # every chart drew itself
        assert page.page.locator(f"#vl-{key} svg").count() == 1, key
    assert page.problems == [], page.problems
    assert page.remote() == [], page.remote()
    print(f"real report: {page.height():,} px tall at {VIEW['width']} px")


def test_hover_shows_the_value_and_its_step(browser: Any, real_report: Path) -> None:
    page = Page(browser, real_report)
    page.page.wait_for_selector("#vl-latency svg")
    page.page.locator("#vl-latency svg g.mark-symbol.role-mark path").first.hover(force=True)
    tooltip = page.page.locator("#vg-tooltip-element")
    tooltip.wait_for(state="visible", timeout=5_000)
    text = tooltip.inner_text()
    assert "latency (ms)" in text and "step" in text and "steps.csv rows" in text, text


def test_a_legend_click_picks_one_series(browser: Any, real_report: Path) -> None:
    page = Page(browser, real_report)
    page.page.wait_for_selector("#vl-latency svg")
    lines = "#vl-latency svg g.mark-line path"

    def opacities() -> list[str]:
        return list(page.page.evaluate(
            f"() => [...document.querySelectorAll('{lines}')].map(p => p.getAttribute('opacity'))"
        ))  # fmt: skip

    before = opacities()
    page.page.locator("#vl-latency svg g.role-legend-symbol path").first.click(force=True)
    page.page.wait_for_timeout(300)
    after = opacities()
    assert set(before) == {"1"}, before
    assert "1" in after and any(o != "1" for o in after), after  # one picked, others faded


def test_a_table_sorts(browser: Any, real_report: Path) -> None:
    page = Page(browser, real_report)
    table = page.page.locator("table.matrix").first
    header = table.locator("thead th").nth(3)  # throughput

    def first_cells() -> list[str]:
        return [t.strip() for t in table.locator("tbody tr td:first-child").all_inner_texts()]

    header.click()
    ascending = first_cells()
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert first_cells() == list(reversed(ascending))


def test_sixteen_targets_stay_short_with_details_collapsed(browser: Any, tmp_path: Path) -> None:
    from tests.harness.test_report import many_targets_run

    report = render_report(many_targets_run(tmp_path, 16))
    page = Page(browser, report)
    page.page.wait_for_selector("#vl-latency svg", timeout=30_000)
    height = page.height()
    print(f"16-target report: {height:,} px tall at {VIEW['width']} px, details collapsed")
    page.screenshot("report-16-targets")
    assert height < MAX_HEIGHT
    assert page.problems == [] and page.remote() == []
    # opened, the collapsed details are all there
    page.page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert page.height() > height
