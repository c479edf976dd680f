"""The same LLM under the Python stacks, end to end through the CLI: tiny-llama f32 served
by FastAPI, Triton (decoupled python backend), TorchServe (streaming handler) and KServe
(its OpenAI data plane), each on harness/llm/serving.py's engine, and FastAPI on the int8
variant. For every stack that can run here: fidelity passes, tokens stream (TTFT before
the last token, one gap per token), output lengths are forced, the server's own counters
agree with `usage`, and its batching and cache settings are recorded. A stack that cannot
run here is skipped with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from adapters.torchserve import TorchserveAdapter
from tests.integration.test_run import _cpus, run_cli

pytestmark = pytest.mark.usefixtures("no_orphans")

STACKS = ("fastapi", "triton", "torchserve", "kserve")
OUTPUT = 12
SCENARIO = (
    f"""\
name: llm-stacks-e2e
model: {{name: tiny-llama}}
workload:
  prompt_tokens: {{kind: uniform, min: 16, max: 48}}
  output_tokens: {{kind: fixed, value: {OUTPUT}}}
  samples: 16
  prompt_cache: false
fidelity: {{samples: 8}}
slo: {{latency_ms: 5000, ttft_ms: 2000, tpot_ms: 500}}
resources: {{server_cpus: {_cpus(0)}, client_cpus: {_cpus(1)}}}
load:
  duration_s: 1.5
  warmup_s: 0.2
  target_warmup_s: 0.3
  timeout_s: 60
  profile:
    kind: sweep
    steps:
      - {{mode: closed, concurrency: 2}}
targets:
"""
    + "".join(
        f"  - name: {s}\n    adapter: {{kind: {s}}}\n    variant: f32\n    startup_timeout_s: 240\n"
        for s in STACKS
    )
    + "  - name: fastapi-int8\n    adapter: {kind: fastapi}\n    variant: int8\n"
)


@pytest.fixture(scope="module")
def stacks_run(tmp_path_factory: pytest.TempPathFactory, build_cache: Path):
    tmp = tmp_path_factory.mktemp("llm-stacks")
    path = tmp / "llm-stacks.yaml"
    path.write_text(SCENARIO)
    result = run_cli("run", str(path), "--out", str(tmp / "results"))
    return result, next((tmp / "results").iterdir())


def _ran(run_dir: Path) -> dict[str, dict]:
    return {t["name"]: t for t in json.loads((run_dir / "targets.json").read_text())}


def test_every_stack_serves_the_same_model_faithfully(stacks_run) -> None:
    result, run_dir = stacks_run
    assert result.returncode == 0, result.stdout + result.stderr
    targets = _ran(run_dir)
    for name in STACKS:
        target = targets[name]
        if name == "torchserve" and not TorchserveAdapter.availability().available:
            assert target["status"] == "unavailable" and target["error"], target
            print(f"torchserve skipped here: {target['error']}")
            continue
        assert target["status"] == "ok", (name, target)
        assert target["fidelity"]["passed"], (name, target["fidelity"])
    # the 8-bit variant of the transformers stacks (torch dynamic int8) serves faithfully too
    assert targets["fastapi-int8"]["status"] == "ok", targets["fastapi-int8"]
    assert targets["fastapi-int8"]["fidelity"]["passed"], targets["fastapi-int8"]["fidelity"]


def test_tokens_stream_and_counters_agree(stacks_run) -> None:
    _, run_dir = stacks_run
    steps = pd.read_csv(run_dir / "steps.csv")
    assert set(steps["target"]) >= {"fastapi", "triton", "kserve"}
    for _, step in steps.iterrows():
        name = step["target"]
        assert step["errors"] == 0, name
        assert step["output_tokens_mean"] == OUTPUT, name  # the length is forced
        assert 0 < step["ttft_p50_ms"] < step["p50_ms"], name  # the first token came early
        assert step["itl_p50_ms"] > 0, name
        # the engine's own counters, read around the step, count what `usage` counted
        # (give or take a request in flight at either edge)
        assert step["server_output_tokens"] > 0, name
        assert step["server_prefill_ms"] > 0 and step["server_decode_ms"] > 0, name
    for name in steps["target"]:
        files = sorted((run_dir / "records" / name).glob("*.parquet"))
        ok = pd.read_parquet(files[-1]).query("error == 0")
        assert (ok["itl_ns"].map(len) == OUTPUT - 1).all(), name  # one event per token


def test_settings_recorded(stacks_run) -> None:
    _, run_dir = stacks_run
    for name, target in _ran(run_dir).items():
        if target["status"] != "ok":
            continue
        settings = target["settings"]
        assert settings["batching"].startswith("none"), (name, settings)
        # what the engine does (it keeps no cache), whatever the scenario asked
        assert settings["prompt_cache"] == "none (every prompt prefilled in full)", name


def test_openai_http_reads_an_external_servers_counters(stacks_run, tmp_path: Path) -> None:
    """An already-running server (our FastAPI LLM app, on the variant the run built) behind
    `openai-http` with `metrics: {path: /metrics, counters: auto}`: the page's names are
    recognised and its counters become the step's server columns."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from harness.net import free_port

    _, run_dir = stacks_run
    f32 = next(t for t in _ran(run_dir).values() if t["name"] == "fastapi")["variant"]
    variant_dir = next(
        p.parent
        for p in (Path(os.environ["SERVINGBENCH_CACHE"]) / "variants").glob("tiny-llama/*/hf")
        if '"float32"' in (text := (p / "config.json").read_text()) and "quantization" not in text
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "adapters._fastapi_llm", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "SB_VARIANT_DIR": str(variant_dir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        head, _, _ = SCENARIO.partition("targets:\n")
        path = tmp_path / "external.yaml"
        path.write_text(
            head + "targets:\n  - name: external\n"
            "    adapter: {kind: openai-http, metrics: {path: /metrics, counters: auto}}\n"
            f"    variant: {f32}\n"
            f'    launcher: {{kind: external, url: "http://127.0.0.1:{port}"}}\n'
        )
        result = run_cli("run", str(path), "--out", str(tmp_path / "results"))
        assert result.returncode == 0, result.stdout + result.stderr
        out = next((tmp_path / "results").iterdir())
        step = pd.read_csv(out / "steps.csv").iloc[0]
        assert step["errors"] == 0
        assert step["server_output_tokens"] > 0 and step["server_prefill_ms"] > 0
    finally:
        server.terminate()
        server.wait(timeout=30)
