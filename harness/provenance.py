"""What a run needs to be trusted and reproduced: versions, hardware, git revision, command."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

PACKAGES = (
    "servingbench",
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "scikit-learn",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "pandas",
    "pyarrow",
)


def versions() -> dict[str, str]:
    from harness.stack import package_versions

    return {"python": platform.python_version(), **package_versions(PACKAGES)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware() -> dict[str, Any]:
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "cpu_model": _cpu_model(),
        "cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cpus": affinity,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": [],  # filled by the NVML telemetry where a driver is present
    }


def git_info(repo: Path | None = None) -> dict[str, Any]:
    repo = repo or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"revision": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def collect(seed: int) -> dict[str, Any]:
    return {
        "versions": versions(),
        "hardware": hardware(),
        "git": git_info(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "seed": seed,
    }
