"""Scenario files: every shipped file validates; bad files fail with file, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.scenario import load_scenario, parse_scenario, target_by_name

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))

MINIMAL = """\
name: t
model: {name: digits-cnn}
load:
  profile: {kind: closed, concurrency: 1}
targets:
  - name: a
    adapter: {kind: fastapi}
    variant: onnx
"""


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_shipped_scenarios_validate(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.targets  # type: ignore[attr-defined]


def test_minimal_scenario_gets_defaults() -> None:
    s = parse_scenario(MINIMAL)
    target = s.targets[0]  # type: ignore[attr-defined]
    assert target.launcher.kind == "process"
    assert s.load.profile.concurrency == [1]
    assert s.variants.accuracy_tolerance == 1.0


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_scenario(text, source="bad.yaml")
    assert str(info.value).startswith("bad.yaml: invalid scenario")
    return info.value.problems


def test_unknown_key_is_an_error_with_path_and_line() -> None:
    text = MINIMAL.replace("adapter: {kind: fastapi}", "adapter: {kind: fastapi, worker: 2}")
    [(field, message)] = problems(text)
    assert field == "targets[0].adapter.worker (line 7)"
    assert "unknown key" in message


def test_wrong_value_names_field_and_expectation() -> None:
    text = MINIMAL.replace("concurrency: 1", "concurrency: [1, 0]")
    [(field, message)] = problems(text)
    assert field.startswith("load.profile.concurrency[1]")
    assert "greater than 0" in message


def test_unknown_adapter_kind_lists_known_kinds() -> None:
    [(field, message)] = problems(MINIMAL.replace("kind: fastapi", "kind: fastapy"))
    assert field.startswith("targets[0].adapter")
    assert "known: " in message and " fastapi," in message and " inprocess," in message


def test_unknown_variant_and_missing_field() -> None:
    text = MINIMAL.replace("variant: onnx", "variant: onnx-fp8").replace("name: t\n", "")
    found = dict(problems(text))
    assert any(k.startswith("targets[0].variant") for k in found)
    assert found["name (line 1)"] == "Field required"


def test_near_misses_are_named() -> None:
    text = MINIMAL.replace("{kind: fastapi}", "{kind: fastapi, batchin: {}}")
    text = text.replace("variant: onnx", "variant: onxx").replace("profile:", "profiles:")
    found = dict(problems(text))
    assert "did you mean 'batching'?" in found["targets[0].adapter.batchin (line 7)"]
    assert "keys here: batching, kind, workers" in found["targets[0].adapter.batchin (line 7)"]
    assert "did you mean 'profile'?" in found["load.profiles (line 4)"]
    variant = found["targets[0].variant (line 8)"]
    # only the builds of this scenario's model, not the LLM's
    assert "did you mean 'onnx'?" in variant and "onnx-int8" in variant and "gguf" not in variant
    [(_, kind)] = problems(MINIMAL.replace("kind: fastapi", "kind: fastap"))
    assert kind.startswith("unknown kind 'fastap'; did you mean 'fastapi'?")
    s = parse_scenario(MINIMAL)
    with pytest.raises(ConfigError, match="did you mean 'a'"):
        target_by_name(s, ["aa"])


def test_duplicate_target_names() -> None:
    text = MINIMAL + "  - name: a\n    adapter: {kind: inprocess}\n    variant: eager\n"
    [(_, message)] = problems(text)
    assert "unique" in message and "a" in message


def test_nested_batching_value_checked() -> None:
    text = MINIMAL.replace("{kind: fastapi}", "{kind: fastapi, batching: {max_batch_size: 0}}")
    [(field, _)] = problems(text)
    assert field.startswith("targets[0].adapter.batching.max_batch_size")


def test_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    [(field, message)] = problems("name: t\nload:\n  profile: [a\n  b: c\n")
    assert field == "(yaml) line 4, column 4"  # where PyYAML stopped, 1-based
    problem, line, caret = message.splitlines()
    assert "expected ',' or ']'" in problem
    assert line.strip() == "b: c" and caret.index("^") == line.index(":")
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_target_selection() -> None:
    s = parse_scenario(MINIMAL)
    assert [t.name for t in target_by_name(s, ["a"])] == ["a"]
    with pytest.raises(ConfigError, match="no such target"):
        target_by_name(s, ["zzz"])


def test_gamma_arrivals_with_a_burstiness_and_burstiness_only_with_gamma() -> None:
    from harness.profiles import plans

    sweep = (
        "profile: {kind: sweep, steps: [{mode: open, rate: 200, arrival: gamma, burstiness: 0.25}]}"
    )
    s = parse_scenario(MINIMAL.replace("profile: {kind: closed, concurrency: 1}", sweep))
    plan = next(plans(s.load, seed=0))  # type: ignore[arg-type]
    assert (plan.arrival, plan.burstiness, plan.label) == ("gamma", 0.25, "open 200/s gamma b=0.25")
    bursty_poisson = "profile: {kind: open, rates: [200], burstiness: 0.5}"
    [(field, message)] = problems(MINIMAL.replace("profile: {kind: closed, concurrency: 1}",
                                                  bursty_poisson))  # fmt: skip
    assert field.startswith("load.profile") and "set arrival: gamma" in message
