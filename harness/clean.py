"""`servingbench clean`: remove what a killed servingbench left behind, and nothing else.

Every server runs under a supervisor the kernel signals when servingbench dies, and every
container has a watchdog that removes it, so a kill -9 of servingbench normally leaves no
process and no container. What no signal can clean is found here by its owner: everything
servingbench makes outside a run folder carries the PID of the servingbench process that
made it, and is removed only when that process is gone:

- run folders still marked `running` whose owner is gone: marked `aborted`;
- supervisors (and their servers) whose owner is gone: killed, with their descendants;
- containers labelled `servingbench.owner=<pid>` whose owner is gone: removed;
- private temp folders `sb-ts-<pid>-*` (TorchServe's sockets and unpacked models) and
  `sb-ray-<pid>-*` (a Ray Serve server's private Ray instance), `sb-node-<pid>-*` (a
  target's scratch run folder on a Ray node whose worker was killed with the node);
- shared-memory segments `/dev/shm/sb<pid>_*` (Triton's python backend).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import shutil
import signal
import tempfile
from pathlib import Path

import psutil

from harness.results import mark_aborted

_TEMP = re.compile(r"^sb-(?:ts|ray|node)-(\d+)-")
_SHM = re.compile(r"^sb(\d+)_")
SHM = Path("/dev/shm")


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid)


def _supervisors() -> list[tuple[psutil.Process, int]]:
    """(supervisor, its owner's pid) of every supervisor process on this machine."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if any(part.endswith("launchers/supervisor.py") for part in cmd) and "--owner" in cmd:
            with contextlib.suppress(ValueError, IndexError):
                found.append((proc, int(cmd[cmd.index("--owner") + 1])))
    return found


def _kill_tree(proc: psutil.Process) -> int:
    family = [proc]
    with contextlib.suppress(psutil.Error):
        family += proc.children(recursive=True)
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=5)
    return len(family)


def _containers() -> list[str]:
    """Remove the containers of owners that are gone; where no engine answers, nothing."""
    try:
        from harness.launchers.docker import OWNER_LABEL

        # by name: the repository's docker/ folder of Dockerfiles is not the SDK
        docker = importlib.import_module("docker")
        client = docker.from_env(timeout=10)
        listed = client.containers.list(all=True, filters={"label": OWNER_LABEL})
    except Exception:  # no SDK, no engine: no containers of ours can exist here
        return []
    done = []
    for container in listed:
        owner = container.labels.get(OWNER_LABEL, "")
        if owner.isdigit() and _gone(int(owner)):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                done.append(f"removed container {container.name} (owner {owner} is gone)")
    return done


def clean(out_root: Path) -> list[str]:
    """Do it; return a line per thing removed (empty: nothing was left)."""
    done = [f"marked aborted: {path}" for path in mark_aborted(out_root)]
    for proc, owner in _supervisors():
        if _gone(owner):
            count = _kill_tree(proc)
            done.append(f"killed supervisor {proc.pid} and {count - 1} server process(es) "
                        f"(owner {owner} is gone)")  # fmt: skip
    done += _containers()
    for entry in Path(tempfile.gettempdir()).iterdir():
        found = _TEMP.match(entry.name)
        if found and entry.is_dir() and _gone(int(found.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed temp folder {entry}")
    if SHM.is_dir():
        for entry in SHM.iterdir():
            found = _SHM.match(entry.name)
            if found and _gone(int(found.group(1))):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    done.append(f"removed shared memory {entry}")
    return done
