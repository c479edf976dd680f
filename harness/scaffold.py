"""`servingbench new-adapter NAME [--kind K]`: a working one-file adapter and its test.

Each kind is an adapter and its server in one module, passing its conformance suite as
generated; an author then swaps the server for the framework's own and keeps the tests
green (docs/adding-an-adapter.md):

- `http`      the digits model behind plain JSON on the standard library's HTTP server
- `grpc`      the same behind Open Inference v2 over gRPC (grpcio + tritonclient's messages)
- `generate`  tiny-llama generations streamed over the OpenAI API (server-sent events)
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
from pathlib import Path
from string import Template

from harness.errors import ServingBenchError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
TEMPLATES = Path(__file__).parent / "templates"
# kind -> (adapter template, test template)
KINDS = {
    "http": ("adapter_http.py.tmpl", "test_tensor.py.tmpl"),
    "grpc": ("adapter_grpc.py.tmpl", "test_grpc.py.tmpl"),
    "generate": ("adapter_generate.py.tmpl", "test_generate.py.tmpl"),
}


class ScaffoldError(ServingBenchError):
    """The adapter name or the place to write it is not acceptable; says why."""


def check_name(name: str, top_level: bool) -> None:
    """A lowercase identifier, not a kind already registered, not a module it would shadow."""
    from harness import registry

    if not NAME.match(name):
        raise ScaffoldError(
            f"adapter name {name!r}: use lowercase letters, digits and '_', starting with a "
            "letter (it is the module name and the scenario's `kind`)"
        )
    if keyword.iskeyword(name):
        raise ScaffoldError(f"adapter name {name!r} is a Python keyword")
    if name in registry.adapters():
        existing = registry.adapters()[name]
        raise ScaffoldError(f"adapter kind {name!r} already exists ({existing.__module__})")
    if name in sys.stdlib_module_names or name in ("harness", "adapters"):
        raise ScaffoldError(f"adapter name {name!r} would shadow the module of that name")
    # a top-level module (--dir) must not hide an installed package of the same name
    if top_level and importlib.util.find_spec(name) is not None:
        raise ScaffoldError(f"adapter name {name!r} would shadow the installed module {name}")


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def new_adapter(
    name: str, directory: Path | None = None, root: Path | None = None, kind: str = "http"
) -> list[Path]:
    """Write `<name>.py` and `test_<name>.py` of one of the `KINDS`; return their paths.

    Default: `adapters/<name>.py` and `tests/adapters/test_<name>.py` under `root` (the
    current folder: a servingbench checkout). With `directory`: both files in it, the
    adapter a top-level module that its test imports by name.
    """
    if kind not in KINDS:
        raise ScaffoldError(f"no adapter kind {kind!r} to scaffold (kinds: {', '.join(KINDS)})")
    top_level = directory is not None
    check_name(name, top_level)
    if directory is not None:
        module_path, test_path = directory / f"{name}.py", directory / f"test_{name}.py"
        module = name
    else:
        base = root or Path.cwd()
        if not (base / "adapters" / "__init__.py").exists():
            raise ScaffoldError(
                f"no adapters/ package in {base}: run from a servingbench checkout or pass --dir"
            )
        module_path = base / "adapters" / f"{name}.py"
        test_path = base / "tests" / "adapters" / f"test_{name}.py"
        module = f"adapters.{name}"
    existing = [str(p) for p in (module_path, test_path) if p.exists()]
    if existing:
        raise ScaffoldError(f"will not overwrite {', '.join(existing)}")
    # import order as ruff's isort wants it: `adapters` and `harness` share a section
    values = {"kind": name, "cls": camel(name), "module": module, "gap": "\n" * top_level}
    module_path.parent.mkdir(parents=True, exist_ok=True)
    test_path.parent.mkdir(parents=True, exist_ok=True)
    adapter, test = (Template((TEMPLATES / t).read_text()) for t in KINDS[kind])
    module_path.write_text(adapter.substitute(values))
    test_path.write_text(test.substitute(values))
    return [module_path, test_path]
