"""A deployment's parameters: the schema made from a flow's signature, ``--param`` texts read
against it, and the parameter table and run command that the CLI and the UI show."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

import pytest

from vivace import flow
from vivace.deployments.parameters import (
    ParameterRow,
    parameter_rows,
    parameter_schema,
    parse_cli_parameters,
    run_command,
    type_text,
)
from vivace.exceptions import ParameterValidationError
from vivace.store.deployments import DeploymentRecord

SCHEMA = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "description": "the day"},
        "rows": {"type": "integer", "default": 10},
        "ids": {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]},
    },
    "required": ["day"],
}


def record(name: str, parameters: dict[str, Any]) -> DeploymentRecord:
    now = dt.datetime.now(dt.UTC)
    return DeploymentRecord(
        id=uuid.uuid4(),
        name=name,
        version=1,
        flow_name="etl",
        entrypoint="flows/etl.py:etl",
        storage={"url": "/srv/code"},
        parameter_schema=SCHEMA,
        parameters=parameters,
        infrastructure={"type": "process"},
        work_queue_name="default",
        tags=(),
        description=None,
        created=now,
        updated=now,
    )


class Color(enum.StrEnum):
    ONE = "1"
    TWO = "2"


class Opaque:
    """A default with no JSON form."""


@flow
def typed(
    version: str,
    flag: str = "no",
    count: int = 0,
    ratio: float = 1.0,
    note: str | None = None,
    label: str | list[str] = "a",
    color: Color = Color.ONE,
    options: dict[str, int] | None = None,
) -> None:
    pass


# -- the schema ---------------------------------------------------------------------------------


def test_a_default_with_no_json_form_is_left_out_without_a_warning() -> None:
    @flow
    def odd(thing: Any = Opaque(), n: int = 2) -> None:  # noqa: B008 - the point of the test
        pass

    schema = parameter_schema(odd)  # filterwarnings=error: a warning fails the test

    assert "default" not in schema["properties"]["thing"]
    assert schema["properties"]["n"]["default"] == 2


# -- --param k=v ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        pytest.param("version=1.0", "1.0", id="string-not-a-number"),
        pytest.param("flag=true", "true", id="string-not-a-bool"),
        pytest.param("version=null", "null", id="string-not-null"),
        pytest.param('version="quoted"', '"quoted"', id="string-as-typed"),
        pytest.param("count=3", 3, id="integer"),
        pytest.param("ratio=0.5", 0.5, id="number"),
        pytest.param("note=null", None, id="optional-null"),
        pytest.param("note=1.0", "1.0", id="optional-text"),
        pytest.param("label=1.0", "1.0", id="union-json-fails-text-fits"),
        pytest.param('label=["x"]', ["x"], id="union-json-fits"),
        pytest.param("color=2", "2", id="enum-by-ref"),
        pytest.param('options={"a": 1}', {"a": 1}, id="object"),
        pytest.param("count=many", "many", id="not-json-kept-for-the-check"),
        pytest.param("count=1.5", 1.5, id="json-kept-when-neither-fits"),
        pytest.param("other=1.0", 1.0, id="not-in-the-schema"),
    ],
)
def test_param_texts_are_read_against_the_schema(pair: str, expected: Any) -> None:
    [(_, value)] = parse_cli_parameters([pair], parameter_schema(typed)).items()

    assert value == expected and type(value) is type(expected)


def test_param_texts_without_a_schema_are_json_when_they_parse() -> None:
    assert parse_cli_parameters(["a=1.0", "b=true", "c=monday", "d=[1]"]) == {
        "a": 1.0,
        "b": True,
        "c": "monday",
        "d": [1],
    }
    with pytest.raises(ParameterValidationError, match="is not NAME=VALUE"):
        parse_cli_parameters(["a"], parameter_schema(typed))


# -- the parameter table (CLI and UI) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"type": "integer"}, "integer", id="plain"),
        pytest.param({"type": ["string", "null"]}, "string or null", id="type-list"),
        pytest.param({"type": "array", "items": {"type": "number"}}, "array of number", id="array"),
        pytest.param({"enum": ["a", 1]}, 'one of "a", 1', id="enum"),
        pytest.param({"const": "x"}, '"x"', id="const"),
        pytest.param({"$ref": "#/$defs/Config"}, "Config", id="model"),
        pytest.param(
            {"anyOf": [{"type": "integer"}, {"type": "integer"}, {"type": "null"}]},
            "integer or null",
            id="any-of-repeated",
        ),
        pytest.param({}, "any", id="unconstrained"),
    ],
)
def test_type_text_says_a_schemas_type_in_words(spec: dict[str, Any], expected: str) -> None:
    assert type_text(spec, {}) == expected


def test_parameter_rows_take_the_deployments_defaults_over_the_schemas() -> None:
    rows = parameter_rows(SCHEMA, {"rows": 20, "day": "mon"})
    assert rows == [
        ParameterRow("day", "string", '"mon"', False, "the day", deployment_default=True),
        ParameterRow("ids", "array of integer or null", None, False, None),
        ParameterRow("rows", "integer", "20", False, None, deployment_default=True),
    ]
    required_first = parameter_rows(SCHEMA, {})
    assert [(row.name, row.required) for row in required_first] == [
        ("day", True),
        ("ids", False),
        ("rows", False),
    ]
    assert required_first[2].default == "10"  # the schema's
    assert parameter_rows({"type": "object"}, {}) == []


def test_the_run_command_names_the_parameters_a_run_must_give() -> None:
    assert run_command(record("team/nightly run", {})) == (
        "vivace deployment run 'team/nightly run' --param day=VALUE"
    )
    assert run_command(record("nightly", {"day": "mon"})) == "vivace deployment run nightly"
