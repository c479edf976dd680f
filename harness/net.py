"""Loopback networking helpers shared by launchers, the load generator and calibration.

Only loopback addresses are ever targets of load; servers bind here unless a scenario says
otherwise.
"""

from __future__ import annotations

import functools
import socket

import httpx

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@functools.cache
def http() -> httpx.Client:
    """The one HTTP client for probes, fidelity checks, metrics pages and version queries
    (the load itself has its own transports). `httpx.get` builds a client per call, and a
    client costs ~40 ms here (it loads the CA bundle): a fidelity check of 64 requests paid
    2.5 s for it, twice per target. Thread-safe; no keep-alive, because a server stops and
    another may take its port."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
