"""The versions of a served stack, for provenance: what exactly was compared.

Read where the stack itself lives: its packages from its own environment's Python (Triton's,
KServe's and vLLM's are not the harness's), a binary's `--version`, or the running server's
own answer (Triton's `GET /v2`, vLLM's `GET /version`). Never fatal: a version that cannot be
read is absent, and the reason is recorded instead.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
from collections.abc import Iterable
from typing import Any

import httpx

from harness.environments import Environment
from harness.net import http

_TIMEOUT_S = 10.0
_SCRIPT = """\
import importlib.metadata as m, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(json.dumps(found))
"""


def package_versions(names: Iterable[str], env: Environment | None = None) -> dict[str, str]:
    """Installed versions of `names`: in `env` (its own Python) where it is ready, else here."""
    names = list(names)
    if not names:
        return {}
    if env is not None and env.ready:
        try:
            done = subprocess.run([str(env.python), "-c", _SCRIPT, *names], capture_output=True,
                                  text=True, timeout=_TIMEOUT_S, check=True)  # fmt: skip
            found = json.loads(done.stdout.strip().splitlines()[-1])
            return {str(k): str(v) for k, v in found.items()}
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return {}
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def binary_version(argv: list[str], pattern: str = r"version[:\s\"]+([^\s\"]+)") -> str | None:
    """The first `pattern` group in what `argv` prints (stdout or stderr), e.g. Java's
    `openjdk version "17.0.13"` or llama-server's `version: 4589 (a1b2c3d)`."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else None


def served_field(url: str, key: str) -> str | None:
    """`key` of the JSON a running server answers at `url` (its own version)."""
    try:
        data: Any = http().get(url, timeout=_TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError):
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return str(value) if value is not None else None
