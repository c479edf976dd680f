"""What this machine can run: Docker engine, GPUs, CUDA, TensorRT, Java, each adapter.

Every check returns a `Check` (name, ok, detail) and never raises: a missing piece is a row
with the reason, not an error. `cli.py` prints the rows as a table.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    part: str
    name: str
    ok: bool
    detail: str


def docker_engine() -> Check:
    """Client and server versions through the SDK, or why there is no engine."""
    spec = importlib.util.find_spec("docker")
    # no origin: only the repository's docker/ folder (Dockerfiles) was found, not the SDK
    if spec is None or spec.origin is None:
        return Check("engine", "docker", False, "the `docker` Python SDK is not installed")
    # by name: mypy would take the repository's docker/ folder (Dockerfiles) for the SDK
    docker: Any = importlib.import_module("docker")
    DockerException = docker.errors.DockerException

    try:
        client = docker.from_env(timeout=5)
    except DockerException as exc:
        return Check("engine", "docker", False, _docker_reason(str(exc)))
    try:
        server = client.version()
    except DockerException as exc:
        return Check("engine", "docker", False, _docker_reason(str(exc)))
    finally:
        client.close()
    detail = (
        f"client SDK {docker.__version__}, server {server.get('Version', '?')} "
        f"(API {server.get('ApiVersion', '?')})"
    )
    return Check("engine", "docker", True, detail)


def _docker_reason(message: str) -> str:
    if "Permission denied" in message or "PermissionError" in message:
        return f"permission denied on the Docker socket (join the docker group): {message}"
    if "FileNotFoundError" in message or "No such file" in message or "Connection" in message:
        if shutil.which("dockerd") is None and shutil.which("docker") is None:
            return "Docker is not installed (apt-get install docker.io)"
        return "the Docker engine is not running (start dockerd)"
    return message.splitlines()[0][:200]


def gpus() -> Check:
    from harness.telemetry import gpu_inventory

    found, reason = gpu_inventory()
    if not found:
        return Check("hardware", "gpu", False, reason or "no GPU")
    names = ", ".join(f"{g['index']}: {g['name']} ({g['memory_total_mb']:.0f} MiB)" for g in found)
    return Check("hardware", "gpu", True, f"{len(found)} GPU(s): {names}")


def cuda() -> Check:
    smi = shutil.which("nvidia-smi")
    smi_text = f"nvidia-smi at {smi}" if smi else "no nvidia-smi on PATH"
    if importlib.util.find_spec("torch") is None:
        return Check("runtime", "cuda", False, f"torch is not installed; {smi_text}")
    import torch

    if torch.cuda.is_available():
        return Check("runtime", "cuda", True, f"torch CUDA {torch.version.cuda}; {smi_text}")
    build = torch.version.cuda or "CPU-only build"
    return Check("runtime", "cuda", False, f"torch.cuda unavailable ({build}); {smi_text}")


def tensorrt() -> Check:
    try:
        module = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or a broken install failing on its libraries
        return Check("runtime", "tensorrt", False, f"import tensorrt: {type(exc).__name__}: {exc}")
    return Check("runtime", "tensorrt", True, f"tensorrt {getattr(module, '__version__', '?')}")


def java() -> Check:
    path = shutil.which("java")
    if path is None:
        return Check("runtime", "java", False, "no `java` on PATH (TorchServe needs a JDK 17+)")
    try:
        done = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("runtime", "java", False, f"{path} -version failed: {exc}")
    first = (done.stderr or done.stdout).strip().splitlines()
    if done.returncode != 0 or not first:
        return Check("runtime", "java", False, f"{path} -version exited {done.returncode}")
    return Check("runtime", "java", True, first[0])


def adapters() -> list[Check]:
    from harness import registry

    rows = []
    for kind, cls in registry.adapters().items():
        try:
            found = cls.availability()
        except Exception as exc:  # one broken adapter must not hide the others
            rows.append(Check("adapter", kind, False, f"availability() raised {exc!r}"))
            continue
        rows.append(Check("adapter", kind, found.available, found.reason or cls.description))
    return rows


CHECKS: tuple[Callable[[], Check], ...] = (docker_engine, gpus, cuda, tensorrt, java)


def run_checks() -> list[Check]:
    return [check() for check in CHECKS] + adapters()
