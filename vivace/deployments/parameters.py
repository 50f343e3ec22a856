"""A deployment's parameters: a JSON Schema from the flow's signature, checked when a run is made.

``parameter_schema(flow)`` is the flow's pydantic parameter model as JSON Schema (types, defaults,
required names, descriptions from ``Annotated[..., Field(description=...)]``); a parameter whose
type has no JSON form (a connection, a class of the user's) is left unconstrained, and a flow
with ``**kwargs`` accepts other names. ``run_parameters(deployment, given)`` merges the
deployment's defaults with a run's own and checks them against that schema (jsonschema), so a
bad parameter is refused when the run is created (the API answers 422 naming the field), not when
a worker starts it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from vivace.exceptions import ParameterValidationError

if TYPE_CHECKING:
    from vivace.engine.flows import Flow
    from vivace.store.deployments import DeploymentRecord


def parameter_schema(flow: Flow[Any, Any]) -> dict[str, Any]:
    """The JSON Schema (an object schema) of the flow's parameters."""
    from pydantic.json_schema import GenerateJsonSchema

    class _Lenient(GenerateJsonSchema):
        # A type with no JSON form: accept any value rather than fail the whole schema.
        def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> Any:
            return {}

    model = flow.parameter_model()
    if model is None:
        schema: dict[str, Any] = {"type": "object", "properties": {}}
    else:
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
    from jsonschema import Draft202012Validator

    if given is not None and not isinstance(given, dict):
        raise ParameterValidationError(
            f"parameters of deployment {deployment.name!r} must be a JSON object of name: value; "
            f"got {type(given).__name__}"
        )
    parameters = {**deployment.parameters, **(given or {})}
    validator = Draft202012Validator(deployment.parameter_schema)
    problems = sorted(validator.iter_errors(parameters), key=lambda e: list(e.absolute_path))
    if problems:
        described = "; ".join(_describe(problem) for problem in problems)
        raise ParameterValidationError(
            f"parameters of deployment {deployment.name!r} do not match its flow "
            f"{deployment.flow_name!r}: {described}"
        )
    return parameters


def parse_cli_parameters(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` from the command line: each value read as JSON when it parses as JSON
    (``n=3`` is 3, ``xs=[1,2]`` a list), else kept as text (``day=monday``)."""
    import json

    parameters: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ParameterValidationError(
                f"parameter {pair!r} is not NAME=VALUE; expected e.g. --param day=2026-12-01"
            )
        try:
            parameters[name.strip()] = json.loads(text)
        except ValueError:
            parameters[name.strip()] = text
    return parameters


def _describe(problem: Any) -> str:
    path = "".join(f"[{part!r}]" for part in list(problem.absolute_path)[1:])
    field = list(problem.absolute_path)[:1]
    if field:
        return f"{field[0]!r}{path}: {problem.message}"
    return str(problem.message)
