"""A small client of vivace's history API; HTTP on the standard library alone (urllib, json).

It reads what the store's read helpers read (``vivace.store.queries``, ``.deployments``,
``.work_queues``), with the same names and the same record types, so code written against one
works with the other: the CLI's ``vivace flow-run ls|inspect|logs|watch --api-url URL`` and
``vivace deployment ls|inspect|run|delete --api-url URL`` print the same output through a server
as straight from the database. It also makes the changes an admin key may: creating a run of a
deployment, deleting a deployment, pausing and resuming its schedules, and cancelling a run.
Example::

    client = VivaceClient("http://127.0.0.1:4200/api", api_key=os.environ.get("VIVACE_API_KEY"))
    runs, cursor = client.read_flow_runs(state_types=["FAILED"], limit=100)
    run, created = client.create_deployment_run("nightly", parameters={"day": "2026-12-01"})

Failures are vivace's errors, each saying what to do: the server cannot be reached
(``StoreUnavailableError``), it wants an API key or another one, or refused a parameter
(``ConfigurationError``), it failed (``StoreError``); and those the store's helpers raise where
the server says the same: no such deployment (``DeploymentNotFoundError``), parameters that do
not match the deployment's (``ParameterValidationError``: a 422 the server marks with the header
``Vivace-Error: ParameterValidationError``; any other 422 is a ``ConfigurationError``), no such
schedule (``ScheduleNotFoundError``), a run that cannot be cancelled (``FlowRunStateError``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from vivace.engine.states import StateType
from vivace.exceptions import (
    ConfigurationError,
    DeploymentNotFoundError,
    FlowRunStateError,
    ParameterValidationError,
    ScheduleNotFoundError,
    StoreError,
    StoreUnavailableError,
    VivaceError,
)
from vivace.store.deployments import DeploymentRecord
from vivace.store.queries import LogPage
from vivace.store.records import FlowRunRecord, LogRecord, StateRecord, TaskRunRecord
from vivace.store.schedules import ScheduleRecord
from vivace.store.work_queues import WorkerRecord, WorkQueueRecord

_Params = Mapping[str, str | int | Sequence[str] | None]
_Errors = Mapping[int, type[VivaceError]]
_Record = TypeVar("_Record", FlowRunRecord, TaskRunRecord, StateRecord, LogRecord)
_DEFAULT_TIMEOUT = 30.0
_ERROR_HEADER = "Vivace-Error"
# The errors a server names in that header (vivace.server.api.deployments.ERROR_HEADER).
_NAMED_ERRORS: dict[str, type[VivaceError]] = {
    ParameterValidationError.__name__: ParameterValidationError
}
_NO_DEPLOYMENT: _Errors = {404: DeploymentNotFoundError}
_NO_SCHEDULE: _Errors = {404: ScheduleNotFoundError}


class VivaceClient:
    """Reads the run history through the vivace server at ``api_url``.

    ``api_url`` is the API's root, such as ``http://127.0.0.1:4200/api``; a server's base URL
    (``http://127.0.0.1:4200``) is taken to mean its ``/api``. ``api_key`` is sent as
    ``Authorization: Bearer <key>``.
    """

    def __init__(
        self, api_url: str, *, api_key: str | None = None, timeout: float = _DEFAULT_TIMEOUT
    ) -> None:
        self.api_url = _api_root(api_url)
        self.api_key = api_key or None
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_KeyStaysHome())

    @classmethod
    def from_settings(cls, api_url: str | None = None) -> VivaceClient:
        """A client of ``api_url`` (default ``VIVACE_API_URL``) with the key ``VIVACE_API_KEY``."""
        from vivace.settings import get_settings, secret_value

        settings = get_settings()
        url = api_url or settings.api_url
        if not url:
            raise ConfigurationError(
                "no vivace server given; expected --api-url URL or VIVACE_API_URL, such as "
                "http://127.0.0.1:4200/api"
            )
        return cls(url, api_key=secret_value(settings.api_key))

    # -- the server --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "version": ..., "database": "ok"}``; raises if either is down."""
        body: dict[str, Any] = self._get("/health")
        return body

    # -- flow runs ---------------------------------------------------------------------------------

    def read_flow_runs(
        self,
        *,
        flow_name: str | None = None,
        state_types: Iterable[StateType | str] | None = None,
        name_like: str | None = None,
        tags: Sequence[str] | None = None,
        started_after: dt.datetime | None = None,
        started_before: dt.datetime | None = None,
        sort: str = "start_time_desc",
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[FlowRunRecord], str | None]:
        """A page of flow runs matching every filter given, and the cursor of the next page."""
        page = self._get(
            "/flow-runs",
            {
                "flow": flow_name,
                "state": _state_names(state_types),
                "name_like": name_like,
                "tag": None if tags is None else list(tags),
                "started_after": _iso(started_after),
                "started_before": _iso(started_before),
                "sort": sort,
                "limit": limit,
                "cursor": cursor,
            },
        )
        return [_flow_run(item) for item in page["items"]], page["next_cursor"]

    def read_flow_run(self, flow_run_id: uuid.UUID | str) -> FlowRunRecord | None:
        """The flow run with this id, or None if there is none."""
        body = self._get(f"/flow-runs/{_path_id(flow_run_id)}", missing_ok=True)
        return None if body is None else _flow_run(body)

    def count_task_runs(self, flow_run_id: uuid.UUID | str) -> int:
        """How many task runs the flow run has."""
        count: int = self._get(f"/flow-runs/{_path_id(flow_run_id)}")["task_run_count"]
        return count

    def read_flow_run_progress(
        self, flow_run_id: uuid.UUID | str
    ) -> tuple[FlowRunRecord | None, dict[StateType, int]]:
        """The flow run (None if there is none) and how many task runs it has per state type
        (every state type a key), from one request."""
        body = self._get(f"/flow-runs/{_path_id(flow_run_id)}", missing_ok=True)
        if body is None:
            return None, {}
        counts = {StateType(name): count for name, count in body["task_run_counts"].items()}
        return _flow_run(body), counts

    def read_flow_run_states(self, flow_run_id: uuid.UUID | str) -> list[StateRecord]:
        """The flow run's state history, oldest first."""
        states = self._get(f"/flow-runs/{_path_id(flow_run_id)}/states")
        return [_state(state) for state in states]

    def read_subflow_runs(
        self, parent_flow_run_id: uuid.UUID | str, *, limit: int = 1000
    ) -> list[FlowRunRecord]:
        """Flow runs started from inside the given flow run, in the order they were created."""
        path = f"/flow-runs/{_path_id(parent_flow_run_id)}/subflow-runs"
        return [_flow_run(item) for item in self._get(path, {"limit": limit})]

    # -- task runs ---------------------------------------------------------------------------------

    def read_task_runs(
        self,
        flow_run_id: uuid.UUID | str,
        *,
        state_types: Iterable[StateType | str] | None = None,
        name_like: str | None = None,
        sort: str = "start_time_asc",
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRunRecord], str | None]:
        """A page of the flow run's task runs, and the cursor of the next page."""
        page = self._get(
            f"/flow-runs/{_path_id(flow_run_id)}/task-runs",
            {
                "state": _state_names(state_types),
                "name_like": name_like,
                "sort": sort,
                "limit": limit,
                "cursor": cursor,
            },
        )
        return [_task_run(item) for item in page["items"]], page["next_cursor"]

    # -- logs --------------------------------------------------------------------------------------

    def read_logs(
        self,
        *,
        flow_run_id: uuid.UUID | str,
        task_run_id: uuid.UUID | str | None = None,
        min_level: int | str | None = None,
        limit: int = 200,
        cursor: str | None = None,
    ) -> tuple[list[LogRecord], str | None]:
        """A page of the flow run's log lines, oldest first, and the cursor of the next page."""
        page = self._get(
            f"/flow-runs/{_path_id(flow_run_id)}/logs",
            {
                "task_run_id": None if task_run_id is None else str(task_run_id),
                "level": None if min_level is None else str(min_level),
                "limit": limit,
                "cursor": cursor,
            },
        )
        return [_log(item) for item in page["items"]], page["next_cursor"]

    def read_log_page(
        self,
        *,
        flow_run_id: uuid.UUID | str,
        task_run_id: uuid.UUID | str | None = None,
        min_level: int | str | None = None,
        limit: int = 200,
        cursor: str | None = None,
    ) -> LogPage:
        """``read_logs`` with the cursor a live tail resumes from: polling with the page's
        ``resume_cursor`` gives only the lines recorded since (see ``queries.LogPage``)."""
        page = self._get(
            f"/flow-runs/{_path_id(flow_run_id)}/logs",
            {
                "task_run_id": None if task_run_id is None else str(task_run_id),
                "level": None if min_level is None else str(min_level),
                "limit": limit,
                "cursor": cursor,
            },
        )
        return LogPage(
            [_log(item) for item in page["items"]], page["next_cursor"], page["resume_cursor"]
        )

    def cancel_flow_run(self, flow_run_id: uuid.UUID | str) -> FlowRunRecord:
        """Cancel a deployment's run (admin key): CANCELLED at once if it has not started, else
        CANCELLING until its worker or engine stops it; returns the run afterwards.

        Raises FlowRunStateError for an unknown run, one that ended otherwise, and one not
        created from a deployment (nothing could stop it from the server).
        """
        _, body = self._request(
            "POST",
            f"/flow-runs/{_path_id(flow_run_id)}/cancel",
            errors={404: FlowRunStateError, 409: FlowRunStateError},
        )
        return _flow_run(body)

    # -- deployments -------------------------------------------------------------------------------

    def read_deployments(
        self,
        *,
        flow_name: str | None = None,
        name_like: str | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> list[DeploymentRecord]:
        """Deployments by name (latest versions), optionally of one flow, or only those whose
        name contains ``name_like``."""
        page = self._get(
            "/deployments",
            {"flow": flow_name, "name_like": name_like, "limit": limit, "offset": offset},
        )
        return [_deployment(item) for item in page["items"]]

    def read_deployment(self, name_or_id: uuid.UUID | str) -> DeploymentRecord | None:
        """The deployment (latest version) with this name or id, or None."""
        body = self._get(f"/deployments/{_path_id(name_or_id)}", missing_ok=True)
        return None if body is None else _deployment(body)

    def read_deployment_versions(
        self, deployment: uuid.UUID | str, *, limit: int = 200
    ) -> list[DeploymentRecord]:
        """The deployment's (by name or id) versions still kept, newest first."""
        path = f"/deployments/{_path_id(deployment)}/versions"
        versions = self._request("GET", path, {"limit": limit}, errors=_NO_DEPLOYMENT)[1]
        return [_deployment(item) for item in versions]

    def read_deployment_flow_runs(
        self,
        deployment: uuid.UUID | str,
        *,
        state_types: Iterable[StateType | str] | None = None,
        name_like: str | None = None,
        sort: str = "created_desc",
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[FlowRunRecord], str | None]:
        """A page of the runs created from the deployment (by name or id; any version), newest
        first by default, and the cursor of the next page."""
        _, page = self._request(
            "GET",
            f"/deployments/{_path_id(deployment)}/flow-runs",
            {
                "state": _state_names(state_types),
                "name_like": name_like,
                "sort": sort,
                "limit": limit,
                "cursor": cursor,
            },
            errors=_NO_DEPLOYMENT,
        )
        return [_flow_run(item) for item in page["items"]], page["next_cursor"]

    def delete_deployment(self, deployment: uuid.UUID | str) -> tuple[DeploymentRecord, int]:
        """Delete the deployment (by name or id; admin key) and its versions; its runs that have
        not started are CANCELLED. Return the deployment as it was (its secrets hidden) and how
        many runs were cancelled.

        Raises DeploymentNotFoundError when there is no such deployment.
        """
        _, body = self._request(
            "DELETE", f"/deployments/{_path_id(deployment)}", errors=_NO_DEPLOYMENT
        )
        return _deployment(body), int(body["cancelled_run_count"])

    def create_deployment_run(
        self,
        deployment: uuid.UUID | str,
        *,
        parameters: dict[str, Any] | None = None,
        start_at: dt.datetime | None = None,
        start_in_seconds: float | None = None,
        tags: Sequence[str] | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[FlowRunRecord, bool]:
        """Create a SCHEDULED run of the deployment (by name or id; admin key); return it and
        whether it is new.

        ``parameters`` update the deployment's defaults and are checked against its schema by
        the server (ParameterValidationError naming the field, and no run made; another refused
        value, such as a bad tag, is a ConfigurationError). With an
        ``idempotency_key`` this deployment has seen, no run is made: the first one is returned,
        with ``False``, so a request retried after a lost answer never makes a second run.
        """
        given = {
            "parameters": parameters,
            "start_at": _iso(start_at),
            "start_in_seconds": start_in_seconds,
            "tags": None if tags is None else list(tags),
            "name": name,
            "idempotency_key": idempotency_key,
        }
        body = {field: value for field, value in given.items() if value is not None}
        status, run = self._request(
            "POST",
            f"/deployments/{_path_id(deployment)}/runs",
            body=body,
            errors=_NO_DEPLOYMENT,
        )
        return _flow_run(run), status == 201

    def read_deployment_schedules(self, deployment: uuid.UUID | str) -> list[ScheduleRecord]:
        """The deployment's (by name or id) schedules, by position.

        Raises DeploymentNotFoundError when there is no such deployment.
        """
        path = f"/deployments/{_path_id(deployment)}/schedules"
        _, items = self._request("GET", path, errors=_NO_DEPLOYMENT)
        return [_schedule(item) for item in items]

    def pause_deployment_schedule(self, schedule_id: uuid.UUID | str) -> tuple[ScheduleRecord, int]:
        """Pause a deployment's schedule (admin key): it creates no more runs, and its runs that
        have not started are deleted. Return it and how many runs were deleted.

        Raises ScheduleNotFoundError when there is no such schedule.
        """
        path = f"/deployment-schedules/{_path_id(schedule_id)}/pause"
        _, body = self._request("POST", path, errors=_NO_SCHEDULE)
        return _schedule(body), int(body["removed_run_count"])

    def resume_deployment_schedule(self, schedule_id: uuid.UUID | str) -> ScheduleRecord:
        """Resume a deployment's schedule (admin key): the scheduler creates its runs again.

        Raises ScheduleNotFoundError when there is no such schedule.
        """
        path = f"/deployment-schedules/{_path_id(schedule_id)}/resume"
        return _schedule(self._request("POST", path, errors=_NO_SCHEDULE)[1])

    # -- work queues and workers -------------------------------------------------------------------

    def read_work_queues(self) -> list[WorkQueueRecord]:
        """Every work queue, in the order workers serve them (priority, then name)."""
        return [
            WorkQueueRecord(**_values(WorkQueueRecord, item)) for item in self._get("/work-queues")
        ]

    def read_workers(self) -> list[WorkerRecord]:
        """The workers that registered and have not stopped, oldest first."""
        return [_worker(item) for item in self._get("/workers")]

    # -- HTTP --------------------------------------------------------------------------------------

    def _get(self, path: str, params: _Params | None = None, *, missing_ok: bool = False) -> Any:
        """GET ``path`` below the API root; JSON in, vivace's errors out.

        With ``missing_ok``, a 404 gives None instead of an error.
        """
        return self._send("GET", path, params, missing_ok=missing_ok)

    def _send(
        self,
        method: str,
        path: str,
        params: _Params | None = None,
        *,
        body: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """``method`` on ``path`` below the API root with a JSON ``body``: the JSON answer (None
        for an empty one, such as a 204's), or vivace's errors (see ``_request``).

        With ``missing_ok``, a 404 gives None instead of an error.
        """
        try:
            return self._request(method, path, params, body=body)[1]
        except _NotFound:
            if missing_ok:
                return None
            raise

    def _request(
        self,
        method: str,
        path: str,
        params: _Params | None = None,
        *,
        body: dict[str, Any] | None = None,
        errors: _Errors | None = None,
    ) -> tuple[int, Any]:
        """``method`` on ``path`` below the API root: the status and the JSON answer (None for
        an empty one, such as a 204's).

        ``errors`` names the exception to raise, with the server's message, for some statuses;
        an error the server names in the ``Vivace-Error`` header is raised as that one; the
        others raise as ``_http_error`` says.
        """
        url = self.api_url + path
        query = _query(params or {})
        if query:
            url += "?" + query
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                content = response.read()
                return response.status, _json(url, content) if content else None
        except urllib.error.HTTPError as error:
            with error:
                detail = _detail(error.read())
            named = _NAMED_ERRORS.get(error.headers.get(_ERROR_HEADER) or "")
            if named is not None:
                raise named(detail) from None
            if errors and error.code in errors:
                raise errors[error.code](detail) from None
            raise self._http_error(error.code, detail) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", error)
            raise StoreUnavailableError(
                f"cannot reach the vivace server at {self.api_url}: {reason}; check that the "
                "server is running and the URL is right (--api-url or VIVACE_API_URL)"
            ) from None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "vivace-client"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _http_error(self, status: int, detail: str) -> Exception:
        where = f"the vivace server at {self.api_url}"
        if status == 401:
            sent = "the API key sent was refused" if self.api_key else "no API key was sent"
            return ConfigurationError(
                f"{where} needs an API key ({sent}: {detail}); set VIVACE_API_KEY to a key "
                "it accepts"
            )
        if status == 403:
            return ConfigurationError(
                f"{where} refused the API key in VIVACE_API_KEY: {detail}; expected a key with "
                "the role this needs"
            )
        if status == 404:
            return _NotFound(f"{where} refused the request ({status}): {detail}")
        if 400 <= status < 500:
            return ConfigurationError(f"{where} refused the request ({status}): {detail}")
        if status == 503:
            return StoreUnavailableError(f"{where} cannot use its database now: {detail}")
        return StoreError(f"{where} failed ({status}): {detail}")


class _NotFound(ConfigurationError):
    """A 404: ``_get(..., missing_ok=True)`` answers None for it; elsewhere a ConfigurationError
    like any other refused request."""


# -- requests --------------------------------------------------------------------------------------


class _KeyStaysHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but sends the API key only where it was meant to go.

    urllib copies every header onto the redirected request, ``Authorization`` included, whatever
    host the redirect names; a proxy or a mistyped URL could then collect the key. It is kept
    for the same origin and for an upgrade of the same host from http to https (as requests
    does), and dropped otherwise.
    """

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None and not _same_server(req.full_url, redirected.full_url):
            redirected.remove_header("Authorization")
        return redirected


def _same_server(old_url: str, new_url: str) -> bool:
    """Whether a key sent to ``old_url`` may follow a redirect to ``new_url``."""
    old, new = urllib.parse.urlsplit(old_url), urllib.parse.urlsplit(new_url)
    default_ports = {"http": 80, "https": 443}
    try:
        old_port = old.port or default_ports.get(old.scheme)
        new_port = new.port or default_ports.get(new.scheme)
    except ValueError:  # a port that is not a number
        return False
    if old.hostname != new.hostname:
        return False
    if (old.scheme, old_port) == (new.scheme, new_port):
        return True
    return (old.scheme, old_port, new.scheme, new_port) == ("http", 80, "https", 443)


def _api_root(api_url: str) -> str:
    parsed = urllib.parse.urlsplit(api_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigurationError(
            f"API URL {api_url!r} is not an http(s) URL; expected the URL of a vivace server's "
            "API, such as http://127.0.0.1:4200/api"
        )
    path = parsed.path.rstrip("/")
    if not path.endswith("/api"):
        path += "/api"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def _query(params: _Params) -> str:
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            pairs.extend((name, str(item)) for item in value)
        else:
            pairs.append((name, str(value)))
    return urllib.parse.urlencode(pairs)


def _path_id(value: uuid.UUID | str) -> str:
    # Quoted: a malformed id reaches the server as it was typed, which names it in its 422.
    return urllib.parse.quote(str(value), safe="")


def _state_names(state_types: Iterable[StateType | str] | None) -> list[str] | None:
    if state_types is None:
        return None
    if isinstance(state_types, str):
        state_types = [state_types]
    return [str(state_type).upper() for state_type in state_types]


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _json(url: str, payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        raise StoreError(
            f"{url} answered with something that is not JSON; expected the API of a vivace "
            "server, such as http://127.0.0.1:4200/api"
        ) from None


def _detail(payload: bytes) -> str:
    try:
        detail = json.loads(payload)["detail"]
    except (ValueError, KeyError, TypeError):
        return payload.decode(errors="replace").strip()[:200] or "no details"
    return detail if isinstance(detail, str) else json.dumps(detail)


# -- JSON to records ----------------------------------------------------------------------------


def _time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _id(value: str | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(value)


def _state_type(value: str) -> StateType:
    return StateType(value)


def _tuple(value: list[str]) -> tuple[str, ...]:
    return tuple(value)


# How a JSON value becomes a record's field, where it is not the JSON value itself.
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "id": _id,
    "flow_id": _id,
    "deployment_id": _id,
    "worker_id": _id,
    "schedule_id": _id,
    "flow_run_id": _id,
    "task_run_id": _id,
    "parent_flow_run_id": _id,
    "parent_task_run_id": _id,
    "state_type": _state_type,
    "type": _state_type,
    "state_timestamp": _time,
    "start_time": _time,
    "end_time": _time,
    "created": _time,
    "updated": _time,
    "timestamp": _time,
    "expected_start_time": _time,
    "heartbeat": _time,
    "last_polled": _time,
    "started": _time,
    "filled_until": _time,
    "due_at": _time,
    "tags": _tuple,
}


def _values(
    record_type: Any, item: dict[str, Any], decoders: Mapping[str, Callable[[Any], Any]] = _DECODERS
) -> dict[str, Any]:
    """The fields of a record (a dataclass) that an API item has, decoded; absent ones are left
    out, to keep their default (a server older than this client)."""
    values = {}
    for field in dataclasses.fields(record_type):
        if field.name in item:
            decode = decoders.get(field.name)
            value = item[field.name]
            values[field.name] = value if decode is None else decode(value)
    return values


def _record(record_type: type[_Record], item: dict[str, Any]) -> _Record:
    return record_type(**_values(record_type, item))


def _worker(item: dict[str, Any]) -> WorkerRecord:
    # A worker's "type" is its infrastructure type, not a state type.
    return WorkerRecord(**_values(WorkerRecord, item, {**_DECODERS, "type": str}))


def _deployment(item: dict[str, Any]) -> DeploymentRecord:
    # The API's "storage" is the description; the record's is what "storage_record" holds. Both
    # it and "infrastructure" come with their secrets hidden (a URL's password, env values).
    values = _values(DeploymentRecord, {**item, "storage": item["storage_record"]})
    return DeploymentRecord(**values)


def _schedule(item: dict[str, Any]) -> ScheduleRecord:
    # The API's "definition" is the schedule's to_dict(); the record's schedule carries the
    # row's active flag and parameters too, as the store's does.
    from vivace.schedules import schedule_from_dict

    definition = schedule_from_dict(item["definition"])
    schedule = dataclasses.replace(
        definition,  # type: ignore[type-var]
        active=item["active"],
        parameters=item["parameters"],
    )
    values = _values(ScheduleRecord, {**item, "schedule": schedule})
    return ScheduleRecord(**values)


def _flow_run(item: dict[str, Any]) -> FlowRunRecord:
    return _record(FlowRunRecord, item)


def _task_run(item: dict[str, Any]) -> TaskRunRecord:
    return _record(TaskRunRecord, item)


def _state(item: dict[str, Any]) -> StateRecord:
    return _record(StateRecord, item)


def _log(item: dict[str, Any]) -> LogRecord:
    return _record(LogRecord, item)
