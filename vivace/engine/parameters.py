"""Flow parameters: bind the call to the signature, validate and coerce with pydantic.

The pydantic model is built once per flow, on its first run, so ``import vivace`` and decorating
stay cheap.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from vivace.exceptions import ParameterValidationError

if TYPE_CHECKING:
    from vivace.engine.flows import Flow


def bind_parameters(
    flow: Flow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """Return the call's (args, kwargs) — coerced if the flow validates — and a name → value map."""
    signature = flow.signature
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise ParameterValidationError(
            f"flow {flow.name!r} was called with arguments that do not fit its signature "
            f"{flow.name}{signature}: {error}"
        ) from None
    bound.apply_defaults()
    if flow.validate_parameters:
        _validate(flow, bound)
    return bound.args, bound.kwargs, dict(bound.arguments)


def given_parameters(
    flow: Flow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """What the caller passed, by parameter name: the record of a run whose parameters failed."""
    try:
        return dict(flow.signature.bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return {**({"args": list(args)} if args else {}), **kwargs}


def _validate(flow: Flow[Any, Any], bound: inspect.BoundArguments) -> None:
    import pydantic

    try:
        model = flow.parameter_model()
        if model is None:
            return
        fields = {info.alias: field for field, info in model.model_fields.items()}
        values = {
            name: value
            for name, value in bound.arguments.items()
            if name in fields  # *args and **kwargs are passed through unchecked
        }
        validated = model.model_validate(values)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            given = item.get("input")
            problems.append(f"parameter {where!r}: {item['msg']} (got {given!r})")
        raise ParameterValidationError(
            f"flow {flow.name!r} got bad parameters: " + "; ".join(problems)
        ) from None
    except Exception as error:  # a type hint pydantic cannot build a validator for
        raise ParameterValidationError(
            f"flow {flow.name!r}: cannot validate its parameters against their type hints "
            f"({type(error).__name__}: {error}); fix the hints, or pass "
            "validate_parameters=False to @flow"
        ) from error
    for name in values:
        bound.arguments[name] = getattr(validated, fields[name])


def build_parameter_model(
    name: str, signature: inspect.Signature, namespace: dict[str, Any] | None = None
) -> Any:
    """A pydantic model with one field per named parameter (None if there are none).

    Fields are named by position and aliased to the parameter's name: pydantic refuses field
    names that start with ``_`` or shadow its own attributes (``json``, ``copy``, ``schema``).
    String annotations (``from __future__ import annotations``) are resolved in ``namespace``, the
    flow function's globals; a hint that cannot be resolved there is not checked.
    """
    import pydantic

    fields: dict[str, Any] = {}
    for index, parameter in enumerate(signature.parameters.values()):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = Any if parameter.annotation is parameter.empty else parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(namespace or {}))  # as typing.get_type_hints
            except Exception:
                annotation = Any
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[f"p{index}"] = (annotation, pydantic.Field(default, alias=parameter.name))
    if not fields:
        return None
    config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    return pydantic.create_model(f"{name}_parameters", __config__=config, **fields)


def jsonable_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON for the store: values JSON cannot hold are kept as their repr."""
    out: dict[str, Any] = {}
    for name, value in parameters.items():
        try:
            json.dumps(value)
            out[name] = value
        except (TypeError, ValueError):
            text = repr(value)
            out[name] = text if len(text) <= 1000 else text[:997] + "..."
    return out
