"""The HTML report in a real browser: headless Chromium opens a report rendered from a real
run (an in-process floor and a FastAPI server, two closed-loop steps of a second).

How "no errors" is checked: Chromium started with `--enable-logging=stderr --v=0` writes every
console message of the page to stderr as `...:INFO:CONSOLE:<line>] "<message>", source: ...`,
uncaught exceptions included ("Uncaught TypeError: ..."). The report logs nothing itself, so
any CONSOLE line is a failure. A canary page with a deliberate error proves that this
Chromium still reports that way (otherwise "no console lines" would prove nothing). That the
inline sorting script ran to its end is read off `--dump-dom` (the DOM after scripts): it
makes every sortable column header keyboard-focusable (tabindex="0"), which the HTML as
written does not have. DNS is mapped to nothing, so the page can only render offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from harness.report import render_report
from harness.runner import run_scenario
from harness.scenario import parse_scenario
from tests.harness.test_report import without_vega_bundle

pytestmark = pytest.mark.usefixtures("no_orphans")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing resolves: the page must stand alone
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]")
WINDOW = (1280, 2400)
# every chart is Vega-Lite (--static keeps PNGs); a real run samples the server's CPU
CHART_KEYS = ("latency", "throughput", "cdf", "concurrency", "timeline", "server", "resources",
              "accuracy")  # fmt: skip


def _cpus(index: int) -> str:
    cpus = sorted(os.sched_getaffinity(0))
    return "null" if len(cpus) < 2 else f"[{cpus[index]}]"


SCENARIO = f"""\
name: browser
description: "The report in a browser: <b>escaped</b> & shown"
model: {{name: digits-cnn}}
dataset: {{samples: 32}}
fidelity: {{samples: 16}}
slo: {{latency_ms: 50}}
resources: {{server_cpus: {_cpus(0)}, client_cpus: {_cpus(1)}}}
load:
  calibrate: false
  duration_s: 1.0
  warmup_s: 0.2
  target_warmup_s: 0.3
  profile:
    kind: sweep
    steps:
      - {{mode: closed, concurrency: 1}}
      - {{mode: closed, concurrency: 4}}
targets:
  - name: floor
    adapter: {{kind: inprocess}}
    variant: onnx
  - name: fastapi-onnx
    adapter: {{kind: fastapi}}
    variant: onnx
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "chromium is not installed (nox -s tests installs Debian's package as root)"
        print(reason)
        pytest.skip(reason)
    try:
        subprocess.run([path, "--version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"chromium cannot run here: {exc}")
        pytest.skip(f"chromium cannot run here: {exc}")
    return path


def browse(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Open `page` in a fresh headless profile; stdout is what `args` ask for (--dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outcome = run_scenario(parse_scenario(SCENARIO), out_root=tmp_path_factory.mktemp("runs"))
    assert not outcome.failures, outcome.failures
    return render_report(outcome.run_dir)


def test_console_errors_are_seen(chromium: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary.html"
    canary.write_text(
        "<!DOCTYPE html><html><body><p>canary</p>"
        "<script>console.error('canary-logged'); notDefined();</script></body></html>"
    )
    lines = console_lines(browse(chromium, canary, "--dump-dom").stderr)
    assert any("canary-logged" in line for line in lines), lines
    assert any("Uncaught ReferenceError" in line for line in lines), lines


def test_report_loads_with_no_errors_and_its_script_runs(chromium: str, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    result = browse(chromium, report, "--dump-dom")
    assert console_lines(result.stderr) == []
    dom = result.stdout
    assert 'id="decision"' in dom
    assert re.search(r'<h2[^>]*id="decision-headline">Run fastapi-onnx\.</h2>', dom)
    assert "&lt;b&gt;escaped&lt;/b&gt; &amp; shown" in dom  # run-folder text stays text
    assert '<img class="chart"' not in dom
    # the interactive charts drew themselves: vega-embed put an SVG in each
    for key in CHART_KEYS:
        assert re.search(rf'<div class="vl[^"]*" id="vl-{key}".*?<svg', dom, re.S), key
    # the sorting script ran: every sortable header became focusable; the file has none
    headers = re.findall(r"<table class=\"sortable\">\s*<thead>(.*?)</thead>", dom, re.S)
    cells = [th for block in headers for th in re.findall(r"<th[ >][^>]*", block)]
    assert len(cells) > 20 and all('tabindex="0"' in th for th in cells), cells[:3]
    assert "tabindex" not in html


def test_report_is_offline(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    # the inlined vega bundle names URLs (the SVG namespace, its docs) and loads none (the
    # Playwright test watches every request); nothing else in the page names one
    html = without_vega_bundle(html)
    assert not re.search(r"https?://", html)
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:|#)[a-z]+:""", html, re.I)


def test_screenshot_is_not_blank(chromium: str, report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = browse(
        chromium, report, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}"
    )
    assert console_lines(result.stderr) == []
    with Image.open(shot) as image:
        assert image.size == WINDOW
        rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=WINDOW[0] * WINDOW[1])
    assert colours is not None and len(colours) > 200  # text, tables and charts, not a blank
    # the top of the page (title and summary box) has text on it: dark pixels, many shades
    top = rgb.crop((0, 0, WINDOW[0], 600)).convert("L")
    dark = sum(count for count, level in top.getcolors(256) or [] if level < 100)
    assert dark > 0.005 * WINDOW[0] * 600
    assert len(top.getcolors(256) or []) > 20
