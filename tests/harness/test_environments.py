"""Adapter environments: which installer installs what, failures named with their log, and
the run's environment phase (created beside the model build, failures kept per target)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from harness import environments, wheels
from harness.environments import Environment
from harness.errors import UnavailableError

PY = f"cp{sys.version_info[0]}{sys.version_info[1]}"


@pytest.fixture
def find_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip's find-links: one folder, from the environment variable only."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    monkeypatch.setattr(wheels, "PIP_CONFIGS", ())
    monkeypatch.delenv("PIP_CONFIG_FILE", raising=False)
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def test_local_wheels_are_found_only_for_an_exact_pin_and_this_python(find_links: Path) -> None:
    (find_links / f"torch-2.13.0+cpu-{PY}-{PY}-manylinux_2_28_x86_64.whl").touch()
    (find_links / "torchvision-0.29.1-cp39-cp39-manylinux_2_28_x86_64.whl").touch()
    assert wheels.local_dirs("torch==2.13.0") == [str(find_links)]
    assert wheels.local_dirs("torch==2.13.1") == []
    assert wheels.local_dirs("torch>=2.13") == []  # not a pin: uv would choose on its own
    assert wheels.local_dirs("torchvision==0.29.1") == []  # another Python's wheel
    assert wheels.local_dirs("torch==2.13.0", python=(3, 9)) == []


def test_pip_conf_find_links_count_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /nowhere/a\n    file:///nowhere/b\n")
    monkeypatch.setattr(wheels, "PIP_CONFIGS", ())
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_FIND_LINKS", "/nowhere/a")
    assert wheels.pip_find_links() == ["/nowhere/a", "file:///nowhere/b"]


def test_uv_installs_the_pinned_torch_only_from_a_local_wheel(
    find_links: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVINGBENCH_ENVS", str(tmp_path / "envs"))
    env = Environment("x", requirements=("onnxruntime",), preinstall=("torch==2.13.0",))
    # no local wheel: torch through pip (uv would resolve the pin to a CUDA build)
    first, second = environments._steps(env, "uv")
    assert first[1:4] == ["-m", "pip", "install"] and first[-1] == "torch==2.13.0"
    assert second[1:3] == ["pip", "install"] and second[-1] == "onnxruntime"  # uv
    (find_links / f"torch-2.13.0+cpu-{PY}-{PY}-linux_x86_64.whl").touch()
    first, _ = environments._steps(env, "uv")
    assert first[1:3] == ["pip", "install"] and ["--find-links", str(find_links)] == first[5:7]
    # pip throughout where pip is the installer
    assert all(step[1:3] == ["-m", "pip"] for step in environments._steps(env, "pip"))


def test_a_failed_install_names_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVINGBENCH_ENVS", str(tmp_path / "envs"))
    monkeypatch.setenv("SERVINGBENCH_INSTALLER", "pip")
    env = Environment("broken", requirements=("servingbench-no-such-package==0",),
                      pip_args=("--no-index", "--find-links", str(tmp_path)))  # fmt: skip
    with pytest.raises(UnavailableError, match=r"creating the broken environment failed .* see "):
        environments.ensure(env)
    assert not env.ready
    log = env.path.with_suffix(".log").read_text()
    assert "$ " in log and "servingbench-no-such-package" in log
    assert not environments._installs  # nothing left running


def test_expected_duration_in_words() -> None:
    env = Environment("e", (), expected_s=(40.0, 130.0))
    assert environments.expected(env, "uv") == "about 40 s"
    assert environments.expected(env, "pip") == "about 2 min"
    assert environments.expected(Environment("f", ()), "uv") == "a few minutes"


class Phases:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_phase(self, text: str) -> None:
        self.lines.append(text)


def test_the_run_creates_environments_beside_the_model_build_and_keeps_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.runner import _Run

    monkeypatch.setenv("SERVINGBENCH_ENVS", str(tmp_path / "envs"))
    monkeypatch.setenv("SERVINGBENCH_INSTALLER", "pip")
    broken = Environment("broken", requirements=("servingbench-no-such-package==0",),
                         pip_args=("--no-index",))  # fmt: skip
    run: Any = _Run.__new__(_Run)  # the phase needs only these
    run.observer, run.env_errors, run.timings = Phases(), {}, {}
    monkeypatch.setattr(_Run, "_environments", lambda self, targets: [(broken, ["a", "b"])])
    built = []
    with run.environments_beside([]):
        built.append("model")  # the model builds while the environment is created
    assert built == ["model"]
    assert broken.key in run.env_errors and "see " in run.env_errors[broken.key]
    said = run.observer.lines
    assert said[0].startswith("creating the broken environment once, for a, b (pip, ")
    assert said[-1].startswith("the broken environment failed: creating the broken")
    assert run.timings["environments"] > 0
