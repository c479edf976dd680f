"""Local wheels that pip finds and uv does not, so uv can be pointed at them.

pip reads its configuration (`PIP_FIND_LINKS`, pip.conf); uv reads none of it. On a machine
whose pip takes a pinned torch from a local folder (a CPU build), uv would resolve the same
pin to a multi-GB CUDA build from PyPI. `local_dirs("torch==2.13.0")` names the folders among
pip's find-links that hold a wheel of exactly that version for this Python, so the installer
can give them to uv (`--find-links`), which then installs torch from its cache by hard link
in seconds for every further environment. With none, the caller installs that pin with pip.

Standard library only: the noxfile loads this file by path, before anything is installed.
"""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

PIP_CONFIGS = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.config/pip/pip.conf",
               "~/.pip/pip.conf")  # fmt: skip


def pip_find_links() -> list[str]:
    """pip's find-links: the environment variable first, then every pip.conf's [global]."""
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    files = [*PIP_CONFIGS, os.environ.get("PIP_CONFIG_FILE", "")]
    for name in filter(None, files):
        parser = configparser.ConfigParser()
        try:
            parser.read(Path(name).expanduser())
        except (configparser.Error, OSError):
            continue  # a file pip would reject too: not ours to judge
        links += parser.get("global", "find-links", fallback="").split()
    return list(dict.fromkeys(links))


def local_dirs(requirement: str, python: tuple[int, int] | None = None) -> list[str]:
    """Folders among pip's find-links with a wheel of `name==version` for `python` (this
    interpreter's version by default); [] for a requirement that is not a plain pin."""
    name, sep, version = requirement.partition("==")
    if not sep or not name.strip() or not version.strip():
        return []
    major, minor = python or sys.version_info[:2]
    stem = name.strip().replace("-", "_").lower()
    tag = f"-cp{major}{minor}-"
    found = []
    for link in pip_find_links():
        folder = Path(link.removeprefix("file://"))
        if not folder.is_dir():
            continue
        for wheel in folder.glob("*.whl"):
            wheel_name, _, rest = wheel.name.lower().partition("-")
            wheel_version = rest.split("-", 1)[0].split("+", 1)[0]
            if wheel_name == stem and wheel_version == version.strip() and tag in wheel.name:
                found.append(str(folder))
                break
    return found
