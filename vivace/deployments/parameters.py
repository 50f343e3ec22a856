"""A deployment's parameters: a JSON Schema from the flow's signature, checked when a run is made.

``parameter_schema(flow)`` is the flow's pydantic parameter model as JSON Schema (types, defaults,
required names, descriptions from ``Annotated[..., Field(description=...)]``); a parameter whose
type has no JSON form (a connection, a class of the user's) is left unconstrained, a default with
no JSON form is left out, and a flow with ``**kwargs`` accepts other names. ``run_parameters(
deployment, given)`` merges the deployment's defaults with a run's own and checks them against
that schema (jsonschema), so a bad parameter is refused when the run is created (the API answers
422 naming the field), not when a worker starts it.

``parse_cli_parameters`` reads ``--param k=v`` with the schema at hand, so ``version=1.0`` stays
the text ``"1.0"`` for a ``str`` parameter. ``parameter_rows`` and ``run_command`` are the
parameters as the CLI's ``deployment inspect`` and the UI's deployment page show them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shlex
import warnings
from typing import TYPE_CHECKING, Any

from vivace.exceptions import ParameterValidationError

if TYPE_CHECKING:
    from vivace.engine.flows import Flow
    from vivace.store.deployments import DeploymentRecord


@dataclasses.dataclass(frozen=True)
class ParameterRow:
    """One parameter of a deployment, as a table of its parameters shows it."""

    name: str
    type: str
    default: str | None  # JSON text; None: no default
    required: bool  # a run must give it (no default in the schema or the deployment)
    description: str | None
    deployment_default: bool = False  # the default is the deployment's, not the signature's


def parameter_schema(flow: Flow[Any, Any]) -> dict[str, Any]:
    """The JSON Schema (an object schema) of the flow's parameters."""
    from pydantic.json_schema import GenerateJsonSchema, PydanticJsonSchemaWarning

    class _Lenient(GenerateJsonSchema):
        # A type with no JSON form: accept any value rather than fail the whole schema.
        def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> Any:
            return {}

    model = flow.parameter_model()
    if model is None:
        schema: dict[str, Any] = {"type": "object", "properties": {}}
    else:
        with warnings.catch_warnings():
            # A default with no JSON form is left out of the schema, which is what we want:
            # pydantic says so in a warning on every deploy.
            warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
            schema = model.model_json_schema(schema_generator=_Lenient)
    schema.setdefault("properties", {})
    schema["title"] = f"Parameters of flow {flow.name!r}"
    kinds = {p.kind for p in flow.signature.parameters.values()}
    schema["additionalProperties"] = inspect.Parameter.VAR_KEYWORD in kinds
    return schema


def run_parameters(deployment: DeploymentRecord, given: dict[str, Any] | None) -> dict[str, Any]:
    """The deployment's default parameters updated with ``given``, checked against its schema.

    Raises ParameterValidationError naming each wrong field (``'day': 'x' is not of type
    'integer'``) or missing one.
    """
    if given is not None and not isinstance(given, dict):
        raise ParameterValidationError(
            f"parameters of deployment {deployment.name!r} must be a JSON object of name: value; "
            f"got {type(given).__name__}"
        )
    parameters = {**deployment.parameters, **(given or {})}
    problems = schema_problems(deployment.parameter_schema, parameters)
    if problems:
        raise ParameterValidationError(
            f"parameters of deployment {deployment.name!r} do not match its flow "
            f"{deployment.flow_name!r}: {'; '.join(problems)}"
        )
    return parameters


def schema_problems(schema: dict[str, Any], values: Any) -> list[str]:
    """What is wrong with ``values`` for ``schema``, one text per problem naming the field
    (``'day': 'x' is not of type 'integer'``); empty when nothing is."""
    from jsonschema import Draft202012Validator

    found = Draft202012Validator(schema).iter_errors(values)
    return [_describe(problem) for problem in sorted(found, key=lambda e: list(e.absolute_path))]


def parse_cli_parameters(
    pairs: tuple[str, ...] | list[str], schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``["k=v", ...]`` from the command line: each value read as JSON when it parses as JSON
    (``n=3`` is 3, ``xs=[1,2]`` a list), else kept as text (``day=monday``).

    With the parameters' ``schema``, the text is kept as typed where the parameter takes it: for
    a string parameter always (``version=1.0`` is ``"1.0"``, ``flag=true`` is ``"true"``), and
    for another one when the JSON value does not match its schema but the text does.
    """
    properties = (schema or {}).get("properties") or {}
    parameters: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterValidationError(
                f"parameter {pair!r} is not NAME=VALUE; expected e.g. --param day=2026-12-01"
            )
        spec = properties.get(name)
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if isinstance(spec, dict) and value is not text:
            if spec.get("type") == "string":
                value = text
            else:
                # $refs in a parameter's schema point at the whole schema's $defs.
                checked = {**spec, "$defs": (schema or {}).get("$defs", {})}
                if schema_problems(checked, value) and not schema_problems(checked, text):
                    value = text
        parameters[name] = value
    return parameters


def parameter_rows(schema: dict[str, Any], defaults: dict[str, Any]) -> list[ParameterRow]:
    """The parameters of an object JSON Schema, those a run must give first, then by name
    (PostgreSQL does not keep the schema's order); ``defaults`` (the deployment's own) win over
    the schema's."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    rows = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        if name in defaults:
            default: str | None = _json(defaults[name])
        elif "default" in spec:
            default = _json(spec["default"])
        else:
            default = None
        rows.append(
            ParameterRow(
                name=name,
                type=type_text(spec, schema),
                default=default,
                required=name in required and name not in defaults,
                description=spec.get("description"),
                deployment_default=name in defaults,
            )
        )
    return sorted(rows, key=lambda row: (not row.required, row.name))


def type_text(spec: dict[str, Any], root: dict[str, Any]) -> str:
    """A JSON Schema's type in a few words: ``integer``, ``array of string``, ``string or null``,
    ``one of "a", "b"``, a model's name; ``any`` when the schema does not say."""
    if "enum" in spec:
        return "one of " + ", ".join(_json(value) for value in spec["enum"])
    if "const" in spec:
        return _json(spec["const"])
    for combined in ("anyOf", "oneOf"):
        if isinstance(spec.get(combined), list):
            parts = [type_text(part, root) for part in spec[combined] if isinstance(part, dict)]
            return " or ".join(dict.fromkeys(parts)) or "any"
    if isinstance(spec.get("$ref"), str):
        return spec["$ref"].rpartition("/")[2] or "object"
    kind = spec.get("type")
    if isinstance(kind, list):
        return " or ".join(str(each) for each in kind)
    if kind == "array" and isinstance(spec.get("items"), dict):
        return f"array of {type_text(spec['items'], root)}"
    return str(kind) if kind else "any"


def run_command(record: DeploymentRecord) -> str:
    """The shell command that creates a run of the deployment, naming the parameters a run must
    give: ``vivace deployment run nightly --param day=VALUE``."""
    words = ["vivace", "deployment", "run", record.name]
    for row in parameter_rows(record.parameter_schema, record.parameters):
        if row.required:
            words += ["--param", f"{row.name}=VALUE"]
    return shlex.join(words)


def _describe(problem: Any) -> str:
    path = "".join(f"[{part!r}]" for part in list(problem.absolute_path)[1:])
    field = list(problem.absolute_path)[:1]
    if field:
        return f"{field[0]!r}{path}: {problem.message}"
    return str(problem.message)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)
