"""The deployments list, ``/deployments``, and a deployment's page, ``/deployments/{name or id}``.

A deployment's page shows what its latest version says (flow, entrypoint, storage,
infrastructure, work queue), its parameters as a table read from their JSON Schema, the command
that runs it, its runs (a keyset page, filterable by state) and its versions.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from vivace.deployments.storage import describe_storage
from vivace.server import auth
from vivace.server.deps import database_url
from vivace.server.ui.params import PageQuery
from vivace.server.ui.rendering import render
from vivace.server.ui.routing import PageError, PageRoute
from vivace.store.deployments import (
    DeploymentRecord,
    read_deployment,
    read_deployment_versions,
    read_deployments,
)
from vivace.store.queries import count_flow_runs_by_state, read_flow_runs

DEPLOYMENTS_SHOWN = 500
RUN_PAGE = 50
VERSIONS_SHOWN = 50

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])


@dataclasses.dataclass(frozen=True)
class ParameterRow:
    """One parameter of a deployment, as its page's table shows it."""

    name: str
    type: str
    default: str | None  # JSON text; None: no default
    required: bool  # a run must give it (no default in the schema or the deployment)
    description: str | None


@router.get("/deployments", response_class=HTMLResponse)
def deployments_page(request: Request, url: str = Depends(database_url)) -> HTMLResponse:
    """Deployments by name, those of flow ``flow`` or whose name contains ``name`` if given."""
    query = PageQuery(request.query_params)
    name, flow = query.text("name"), query.text("flow")
    # One row more than shown tells whether the list was cut.
    found = read_deployments(url, flow_name=flow, name_like=name, limit=DEPLOYMENTS_SHOWN + 1)
    return render(
        request,
        "deployments.html",
        {
            "nav": "deployments",
            "deployments": found[:DEPLOYMENTS_SHOWN],
            "describe_storage": describe_storage,
            "name": name or "",
            "flow": flow or "",
            "cut": len(found) > DEPLOYMENTS_SHOWN,
            "shown": DEPLOYMENTS_SHOWN,
        },
    )


@router.get("/deployments/{deployment:path}", response_class=HTMLResponse)
def deployment_page(
    request: Request, deployment: str, url: str = Depends(database_url)
) -> HTMLResponse:
    """One deployment: what it runs and where, its parameters, its runs and its versions."""
    # NUL cannot be in a name (PostgreSQL cannot even compare it): no such deployment.
    record = None if "\x00" in deployment else read_deployment(url, deployment)
    if record is None:
        raise PageError(404, f"deployment {deployment!r} not found (neither a name nor an id)")
    query = PageQuery(request.query_params)
    states = query.states("state")
    cursor = query.cursor("cursor")
    runs, next_cursor = read_flow_runs(
        url,
        deployment_id=record.id,
        state_types=states,
        sort="created_desc",
        limit=RUN_PAGE,
        cursor=cursor,
    )
    counts = count_flow_runs_by_state(url, deployment_id=record.id)
    return render(
        request,
        "deployment.html",
        {
            "nav": "deployments",
            "deployment": record,
            "describe_storage": describe_storage,
            "parameters": parameter_rows(record.parameter_schema, record.parameters),
            "command": run_command(record),
            "runs": runs,
            "next_cursor": next_cursor,
            "paged": cursor is not None,
            "counts": {state.value: count for state, count in counts.items() if count},
            "run_total": sum(counts.values()),
            "selected_states": [state.value for state in states or ()],
            "versions": read_deployment_versions(url, record.id, limit=VERSIONS_SHOWN),
            "versions_shown": VERSIONS_SHOWN,
        },
    )


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
    give."""
    words = ["vivace", "deployment", "run", record.name]
    for row in parameter_rows(record.parameter_schema, record.parameters):
        if row.required:
            words += ["--param", f"{row.name}=VALUE"]
    return shlex.join(words)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)
