"""A tiny parent for every server: when servingbench dies, even by SIGKILL, its servers die.

    python -I supervisor.py --owner PID [--grace S] [--cpus 0,1] -- ARGV...   (a server)
    python -I supervisor.py --owner PID --container ID [--docker-socket PATH]

Run by path with the standard library only (no harness import: it starts in ~20 ms and
holds ~9 MB), as the process launcher's direct child:

- PR_SET_PDEATHSIG: the kernel sends this process SIGTERM the moment its parent, the
  harness, dies, however it died;
- PR_SET_CHILD_SUBREAPER: descendants orphaned on the way (TorchServe's Java, started from
  its Python wrapper) are reparented here instead of to PID 1, so none escapes;
- the server itself gets SIGTERM should this supervisor be SIGKILLed (no handler runs
  then: Ray kills a lost worker's children that way);
- the server starts pinned to `--cpus` (set here before it exists, so every thread and
  process it makes inherits the set) in a process group of its own; TERM (from the
  launcher, or from the owner's death) is passed on to that group, then after `--grace`
  seconds every descendant still alive is KILLed and reaped. When the server exits by
  itself, whatever it left behind is killed too, and the supervisor exits with the
  server's exit code.

With `--container`, it starts nothing: it waits for the owner's death and then removes the
container through the Docker Engine API on its unix socket (the docker launcher labels and
removes its containers on every ordinary exit path; this covers the extraordinary one).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


class _Stop(Exception):
    """A signal asked us to stop the server."""


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _term_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


OWNER = 0  # the harness's pid (set in main)
REMOVE_FOR_S = 30.0  # how long a watchdog keeps asking the engine to remove its container


def _children_of(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc (no psutil: this stays stdlib-only)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "(comm)": state, ppid, ...
        parents.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(parents.get(child, []))
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _reap() -> None:
    """Collect every exited child (orphans reparented here included), without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _end_all(server: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """TERM the server's group and every descendant; KILL what is left after `grace_s`."""
    if server is not None and server.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, signal.SIGTERM)
    _signal_all(_children_of(os.getpid()), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _children_of(os.getpid()) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    _signal_all(_children_of(os.getpid()), signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _children_of(os.getpid()) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.02)
    _reap()


def supervise(argv: list[str], grace_s: float) -> int:
    server: subprocess.Popen[bytes] | None = None
    try:
        # the server, too, hears of its parent's death: a SIGKILL of this supervisor (Ray
        # kills a dead worker's children so) must not leave it running, reparented to PID 1
        server = subprocess.Popen(argv, process_group=0, preexec_fn=_term_with_parent)
        while True:  # reap everything; stop when the server itself is gone
            pid, status = os.wait()
            if pid == server.pid:
                server.returncode = os.waitstatus_to_exitcode(status)
                break
    except _Stop:
        # The owner's death (the kernel's signal) needs no courtesy: nobody waits for a
        # graceful stop, and everything must be gone within seconds.
        _end_all(server, grace_s if os.getppid() == OWNER else min(grace_s, 2.0))
        return 128 + signal.SIGTERM
    except OSError as exc:  # the server cannot even be started: say why, like Popen would
        print(f"supervisor: cannot start {argv[0]}: {exc}", file=sys.stderr, flush=True)
        return 127
    _end_all(None, grace_s)  # whatever the server left behind
    return int(server.returncode)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def watch_container(container: str, docker_socket: str) -> int:
    with contextlib.suppress(_Stop):
        signal.pause()  # until the owner's death (SIGTERM) or the launcher's own stop
    # the removal must not be cut short: a second signal (the owner's death arrives after the
    # launcher's own stop, or twice) once raised inside the request and left the container
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    deadline = time.monotonic() + REMOVE_FOR_S
    while True:  # the engine may refuse for a moment (409: a start or stop in progress)
        try:
            connection = _UnixHTTPConnection(docker_socket)
            connection.request("DELETE", f"/containers/{container}?force=true&v=true")
            response = connection.getresponse()
            if response.status in (204, 404):
                return 0
            why = f"HTTP {response.status}: {response.read()[:200]!r}"
        except OSError as exc:
            why = str(exc)
        if time.monotonic() > deadline:
            print(f"supervisor: cannot remove container {container}: {why}", file=sys.stderr)
            return 1
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="servingbench server supervisor")
    parser.add_argument("--owner", type=int, required=True, help="the harness's PID")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between TERM and KILL")
    parser.add_argument("--cpus", default="", help="CPU set of the server (comma-separated)")
    parser.add_argument("--container", help="remove this container when the owner dies")
    parser.add_argument("--docker-socket", default="/var/run/docker.sock")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _stop)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != args.owner:  # the owner died before the death signal was armed
        return 128 + signal.SIGTERM
    global OWNER
    OWNER = args.owner
    if args.container:
        return watch_container(args.container, args.docker_socket)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("nothing to run: give the server's argv after --")
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    code = supervise(command, args.grace)
    if code < 0:  # the server died of a signal: so do we, so the launcher sees the same
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
