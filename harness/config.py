"""Base class for every typed config at a boundary (scenario parts, adapters, launchers)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors, values are immutable once validated, validators stay pure."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def apply_sets(data: dict[str, Any], sets: Iterable[str], source: str = "--set") -> dict[str, Any]:
    """`KEY=VALUE` overrides on a parsed YAML mapping (a copy is returned). Keys are dotted
    (`load.duration_s=2`); a list item is `[index]` or, in a list of named mappings,
    `[name]` (`targets[fastapi-onnx].variant=onnx-int8`); values are read as YAML
    (`repeats=3`, `load.profile.concurrency=[1,4]`). ConfigError names the override."""
    import copy
    import re

    import yaml

    from harness.errors import ConfigError

    result = copy.deepcopy(data)
    problems: list[tuple[str, str]] = []
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append((item, "expected KEY=VALUE, e.g. load.duration_s=2 or repeats=3"))
            continue
        parts = [p for p in re.split(r"\.|(\[[^\]]*\])", key.strip()) if p]
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as exc:
            problems.append((key, f"the value is not YAML: {exc}"))
            continue
        node: Any = result
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part.startswith("["):
                inner = part[1:-1]
                if not isinstance(node, list):
                    problems.append((key, f"{''.join(parts[:i]) or 'the scenario'} is not a list"))
                    break
                if inner.isdigit():
                    index = int(inner)
                else:
                    names = [e.get("name") if isinstance(e, dict) else None for e in node]
                    if inner not in names:
                        problems.append((key, f"no item named {inner!r} (there are: "
                                         f"{', '.join(str(n) for n in names if n)})"))  # fmt: skip
                        break
                    index = names.index(inner)
                if index >= len(node):
                    problems.append((key, f"index {index} is past the list's {len(node)} items"))
                    break
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if not isinstance(node, dict):
                problems.append((key, f"{part}: its parent is not a mapping"))
                break
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    if problems:
        raise ConfigError(source, problems)
    return result
