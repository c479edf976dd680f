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


def ensure(env: Environment, log_path: Path | None = None) -> Path:
    """Create the environment if needed; return its Python. UnavailableError on failure."""
    if env.ready:
        return env.python
    env.path.parent.mkdir(parents=True, exist_ok=True)
    log_path = log_path or env.path.with_suffix(".log")
    venv.EnvBuilder(with_pip=True, clear=True).create(env.path)
    pip = [str(env.python), "-m", "pip"]
    steps = [
        [*pip, "install", "--disable-pip-version-check", *env.pip_args, *packages]
        for packages in (list(env.preinstall), list(env.requirements))
        if packages
    ]
    if env.uninstall:
        steps.append([*pip, "uninstall", "-y", *env.uninstall])
    with log_path.open("ab") as log:
        for cmd in steps:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=1800,
                                  check=False)  # fmt: skip
            if done.returncode != 0:
                raise UnavailableError(
                    f"creating the {env.name} environment failed (pip exit {done.returncode}); "
                    f"see {log_path}"
                )
    (env.path / ".complete").write_text("ok\n")
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
