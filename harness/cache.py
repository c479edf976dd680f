"""Content-addressed build cache: a recipe's hash names a folder that is built once.

Builds write into a temporary sibling and are renamed into place, so an interrupted or
concurrent build never leaves a half-written entry that later runs would trust.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    root = os.environ.get("SERVINGBENCH_CACHE") or Path.home() / ".cache" / "servingbench"
    return Path(root)


def recipe_hash(*parts: Any) -> str:
    """Stable hash of JSON-able recipe parts (configs, versions, source code)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def source_of(obj: Any) -> str:
    """The source code of a module/function, so editing a builder invalidates its cache."""
    return inspect.getsource(obj)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_build(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return `<cache>/<kind>/<key>`, calling `build(tmpdir)` first if it is not there yet."""
    final = cache_root() / kind / key
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    tmp.chmod(0o755)  # like any other folder: a container's non-root user mounts it read-only
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(final)
        except OSError:
            # Somebody else finished the same build first; theirs is as good as ours.
            if not (final / ".complete").exists():
                shutil.rmtree(final, ignore_errors=True)
                tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
