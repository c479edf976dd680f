"""`servingbench new-adapter`: names are checked, and what it writes passes the conformance
suite as generated (run as a user would: pytest on the generated test file)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.adapter import Adapter
from harness.cli import main
from harness.scaffold import ScaffoldError, new_adapter


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("MyServer", "lowercase letters"),
        ("my-server", "lowercase letters"),
        ("9lives", "lowercase letters"),
        ("", "lowercase letters"),
        ("class", "keyword"),
        ("fastapi", "already exists"),
        ("json", "shadow"),
    ],
)
def test_bad_names_are_refused_with_the_reason(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(ScaffoldError, match=why):
        new_adapter(name, tmp_path)
    assert not list(tmp_path.iterdir())


def test_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("# mine\n")
    with pytest.raises(ScaffoldError, match="will not overwrite"):
        new_adapter("mine", tmp_path)
    assert (tmp_path / "mine.py").read_text() == "# mine\n"


def test_default_places_are_the_checkout_folders(tmp_path: Path) -> None:
    (tmp_path / "adapters").mkdir()
    (tmp_path / "adapters" / "__init__.py").write_text("")
    module, test = new_adapter("zed", root=tmp_path)
    assert module == tmp_path / "adapters" / "zed.py"
    assert test == tmp_path / "tests" / "adapters" / "test_zed.py"
    assert "from adapters.zed import ZedAdapter" in test.read_text()
    with pytest.raises(ScaffoldError, match="no adapters/ package"):
        new_adapter("zed", root=tmp_path / "elsewhere")


def test_cli_writes_both_files_or_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-adapter", "my_server", "--dir", str(tmp_path)]) == 0
    assert "test_my_server.py" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} == {"my_server.py", "test_my_server.py"}
    assert main(["new-adapter", "Bad-Name", "--dir", str(tmp_path)]) == 1
    assert "lowercase" in capsys.readouterr().err


def test_generated_module_imports_by_path_as_an_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_path, _ = new_adapter("by_path", tmp_path)
    spec = importlib.util.spec_from_file_location("by_path", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # the importlib recipe: registered before running, so pydantic resolves its annotations
    monkeypatch.setitem(sys.modules, "by_path", module)
    spec.loader.exec_module(module)
    cls = module.ByPathAdapter
    assert issubclass(cls, Adapter) and cls.kind == "by_path" and cls.availability().available
    adapter = cls(cls.config_class.model_validate({"kind": "by_path"}))
    variant = type("V", (), {"path": tmp_path / "variant"})()
    spec_ = adapter.process_spec(variant, tmp_path, "127.0.0.1", {"http": 8123})
    assert spec_ is not None
    assert spec_.argv[1:] == ["-m", "by_path", "--host", "127.0.0.1", "--port", "8123"]
    # the server's `python -m` finds the module in its folder, wherever that is
    assert str(tmp_path) in spec_.env["PYTHONPATH"].split(os.pathsep)


@pytest.mark.parametrize(
    ("kind", "least_passed"),
    # http: 7 checks x 2 variants (no container recipe); grpc: 7 on one variant;
    # generate: 6 checks on f32 (no container or artifact checks for generations)
    [("http", 14), ("grpc", 7), ("generate", 6)],
)
def test_generated_adapter_passes_its_conformance_suite(
    tmp_path: Path, bundle: object, kind: str, least_passed: int
) -> None:
    _, test_file = new_adapter(f"fresh_{kind}", tmp_path, kind=kind)
    # `bundle` built the model in this session's cache: the child session reuses it
    env = {**os.environ, "SERVINGBENCH_CACHE": os.environ["SERVINGBENCH_CACHE"]}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(test_file), "-q", "-rA", "-p", "no:cacheprovider",
         "-o", "addopts=", "--rootdir", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed" not in summary and "error" not in summary, summary
    passed = sum(1 for line in done.stdout.splitlines() if line.startswith("PASSED"))
    assert passed >= least_passed, done.stdout[-4000:]


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="kinds: http, grpc, generate"):
        new_adapter("mine", tmp_path, kind="soap")
    assert not list(tmp_path.iterdir())
