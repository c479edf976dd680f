"""`servingbench doctor`: every row present, each missing piece with a reason."""

from __future__ import annotations

import pytest

from harness import registry
from harness.cli import main
from harness.doctor import run_checks


def test_every_part_has_a_row_and_a_reason() -> None:
    checks = run_checks()
    names = {(c.part, c.name) for c in checks}
    for expected in ("docker", "gpu", "cuda", "tensorrt", "java"):
        assert any(name == expected for _, name in names), expected
    for kind in registry.adapters():
        assert ("adapter", kind) in names
    for check in checks:
        assert isinstance(check.ok, bool)
        if not check.ok:  # a missing piece always says why
            assert check.detail.strip(), check


def test_docker_row_is_a_version_or_a_known_reason() -> None:
    (row,) = [c for c in run_checks() if c.name == "docker"]
    if row.ok:
        assert "server" in row.detail and "client SDK" in row.detail
    else:
        known = ("not installed", "not running", "permission", "SDK")
        assert any(k in row.detail for k in known) or row.detail


def test_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    for word in ("docker", "gpu", "cuda", "tensorrt", "java", "fastapi"):
        assert word in text
