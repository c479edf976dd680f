"""The scenario's JSON Schema: the committed file is what `servingbench schema --in-tree`
writes, every example scenario names it and passes it, and a typo fails it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from harness.scenario import json_schema
from tests.conftest import REPO

SCHEMA = REPO / "scenarios" / "scenario.schema.json"


def test_the_committed_schema_is_the_generated_one() -> None:
    assert json.loads(SCHEMA.read_text()) == json.loads(json.dumps(json_schema(in_tree=True))), (
        "scenarios/scenario.schema.json is stale: "
        "servingbench schema --in-tree -o scenarios/scenario.schema.json"
    )


def test_every_example_scenario_names_and_passes_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("# yaml-language-server: $schema=scenario.schema.json"), path
        jsonschema.validate(yaml.safe_load(text), schema)


def test_a_typo_fails_the_schema(tmp_path: Path) -> None:
    schema = json.loads(SCHEMA.read_text())
    data = yaml.safe_load((REPO / "scenarios" / "digits-cnn.yaml").read_text())
    data["load"]["duraton_s"] = 2
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        assert "duraton_s" in str(exc)
    else:
        raise AssertionError("a misspelt key passed the schema")
