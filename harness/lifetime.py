"""Processes that must not outlive servingbench: the kernel ends them when it dies.

`die_with_parent()` arms Linux's parent-death signal in the calling process: when the
process that started it (the harness, or a load process's parent) dies, however it died,
the kernel sends SIGKILL. The load processes and Locust's processes arm it; servers run
under the supervisor (harness/launchers/supervisor.py), which does the same for itself
(it is a standalone script, so it has its own copy of these few lines) and then ends the
whole tree of the server it watches.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Have the kernel send `signum` to this process once its parent is gone (Linux; a
    no-op where prctl is missing). Usable as a Popen `preexec_fn`."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signum)
