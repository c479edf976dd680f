"""Sessions: benchmark (the main job), tests, lint, typecheck, loadgen_bench.

Torch is installed first and pinned: on this kind of machine `pip install torch==2.13.0`
takes the local CPU build, where an unpinned resolver would fetch a multi-GB CUDA build.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

TORCH = os.environ.get("SERVINGBENCH_TORCH", "torch==2.13.0")
DEFAULT_SCENARIO = "scenarios/digits-cnn.yaml"


def install(session: nox.Session, *extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{','.join(extras)}]")


@nox.session
def benchmark(session: nox.Session) -> None:
    """Run a scenario (default: the embedded digits-cnn one) and write its HTML report."""
    install(session, "all")
    args = session.posargs or [DEFAULT_SCENARIO]
    session.run("servingbench", "run", *args)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (heavy optional stacks have their own sessions)."""
    install(session, "all", "test")
    session.run("pytest", "-m", "not docker and not vllm and not gpu", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install(session, "all", "lint")
    session.run("mypy", "harness", "adapters")


@nox.session
def loadgen_bench(session: nox.Session) -> None:
    """Our load engine vs locust (FastHttpUser) vs wrk: client CPU, max rate, added latency."""
    if shutil.which("wrk") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "install", "-y", "-qq", "wrk", external=True)
    install(session, "all", "loadgen-bench")
    session.run("python", "benchmarks/loadgen_bench.py", *session.posargs)
