"""Per-adapter virtual environments: the local twin of a container image.

Frameworks pin conflicting versions (PyTriton needs numpy<2, vLLM pins its own torch), so
an adapter may declare an `Environment`: the harness creates it once, cached by the hash
of its requirements, and the process launcher runs that adapter's server with its Python.
The load engine, telemetry and report stay in the harness's own environment.

A server started this way imports `harness.runtime` from the project folder (PYTHONPATH),
so the environment needs only what the server and the runtime import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

from harness.cache import cache_root, recipe_hash
from harness.errors import UnavailableError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYTHON = "{python}"  # placeholder in a ProcessSpec argv: the adapter environment's Python


def envs_root() -> Path:
    """Where environments live: `$SERVINGBENCH_ENVS`, else `<cache>/envs`. Separate from the
    build cache so a throw-away cache (tests) can still reuse minutes-long pip installs."""
    root = os.environ.get("SERVINGBENCH_ENVS")
    return Path(root) if root else cache_root() / "envs"


@dataclass(frozen=True)
class Environment:
    name: str
    requirements: tuple[str, ...]
    # installed first and alone, so pip's resolver never swaps it (torch's CPU build)
    preinstall: tuple[str, ...] = ()
    pip_args: tuple[str, ...] = field(default=())
    # removed after installing: packages a requirement drags in that break its imports
    uninstall: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return recipe_hash(self.name, self.preinstall, self.requirements, self.pip_args,
                           self.uninstall, sys.version_info[:2])  # fmt: skip

    @property
    def path(self) -> Path:
        return envs_root() / f"{self.name}-{self.key}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def ready(self) -> bool:
        return (self.path / ".complete").exists()


def installer() -> str:
    """ "uv" where it is on PATH (it resolves and installs many times faster), else "pip";
    `SERVINGBENCH_INSTALLER=pip` (or uv) chooses."""
    chosen = os.environ.get("SERVINGBENCH_INSTALLER", "").strip().lower()
    if chosen in ("pip", "uv"):
        return chosen
    return "uv" if shutil.which("uv") else "pip"


def _steps(env: Environment, tool: str) -> list[list[str]]:
    pip = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check"]
    # the preinstall (torch) always through pip: pip's configuration is what knows a
    # machine's local CPU build (uv reads no pip.conf and would fetch a CUDA build); uv then
    # keeps what is installed where it satisfies the requirements
    steps = [[*pip, *env.pip_args, *env.preinstall]] if env.preinstall else []
    if env.requirements:
        uv = [shutil.which("uv") or "uv", "pip", "install", "--python", str(env.python)]
        steps.append([*(uv if tool == "uv" else pip), *env.pip_args, *env.requirements])
    if env.uninstall:
        steps.append([str(env.python), "-m", "pip", "uninstall", "-y", *env.uninstall])
    return steps


def ensure(env: Environment, log_path: Path | None = None) -> Path:
    """Create the environment if needed; return its Python. UnavailableError on failure."""
    if env.ready:
        return env.python
    env.path.parent.mkdir(parents=True, exist_ok=True)
    log_path = log_path or env.path.with_suffix(".log")
    venv.EnvBuilder(with_pip=True, clear=True).create(env.path)
    tool = installer()
    with log_path.open("ab") as log:
        for cmd in _steps(env, tool):
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=1800,
                                  check=False)  # fmt: skip
            if done.returncode != 0:
                raise UnavailableError(
                    f"creating the {env.name} environment failed ({Path(cmd[0]).name} exit "
                    f"{done.returncode}); see {log_path}"
                )
    (env.path / ".complete").write_text(f"ok ({tool})\n")
    return env.python


def server_env(env: Environment | None) -> dict[str, str]:
    """Environment variables a server in `env` needs to import the project."""
    if env is None:
        return {}
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "VIRTUAL_ENV": str(env.path),
            "PATH": f"{env.path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip


def resolve_argv(argv: list[str], env: Environment | None) -> list[str]:
    python = str(env.python) if env is not None else sys.executable
    return [python if part == PYTHON else part for part in argv]
