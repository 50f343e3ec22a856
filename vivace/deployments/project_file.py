"""``vivace.yaml``: a project's deployments, declared once and deployed with ``vivace deploy``.

The file sits at the root of the project folder (the folder that is uploaded), and lists the
deployments made from it::

    deployments:
      - name: nightly-etl
        entrypoint: flows/etl.py:etl   # FILE.py:NAME, the file relative to this folder
        work_queue: default            # optional (default: default)
        parameters: {day: 1}           # optional: default parameters of every run
        tags: [etl]                    # optional
        description: Loads yesterday's orders.   # optional
        storage: s3://bucket/flows     # optional: a folder, an fsspec URL or block:NAME
        infrastructure: process        # optional: a type name, block:NAME, or a mapping:
                                       #   {type: docker, image: "org/flows:1", env: {A: "1"}}
        schedules:                     # optional: when the server's scheduler creates runs
          - cron: "0 9 * * 1-5"        #   a cron expression,
            timezone: Europe/Lisbon    #   in this zone (default UTC)
          - interval: 15m              #   every 15m, 1h30m, 2d, or seconds,
            anchor: 2026-01-01T00:05:00  # counted from this time (optional)
            parameters: {day: 0}       #   this schedule's runs' parameters over the defaults
            active: false              #   deployed paused (default: active)
          - rrule: "FREQ=WEEKLY;BYDAY=MO,WE"
        skip_late_after: 10m           # optional: skip a run not started this late
        concurrency_limit: 2           # optional: at most this many runs at a time

``schedules`` left out keeps the schedules the deployment has (a redeploy does not touch them);
``schedules: []`` removes them. A schedule that was there before, with the same definition and
parameters, keeps its runs and its paused or active state.

``vivace deploy --all`` deploys every entry, ``vivace deploy --name nightly-etl`` just that one;
either way the project folder is the folder of this file, whatever folder the flow's file is in.
The file is checked as a whole before anything is deployed: an unknown key, a value of the wrong
type or a name given twice is an error naming the entry and the key, so a typo
(``work_qeue:``) is never silently ignored.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vivace.exceptions import DeploymentError, VivaceError

if TYPE_CHECKING:
    from vivace.deployments.deploy import PreparedDeployment
    from vivace.schedules import Schedule
    from vivace.store.deployments import DeploymentRecord

PROJECT_FILE = "vivace.yaml"
_ENTRY_KEYS = (
    "name, entrypoint, work_queue, parameters, tags, description, storage, infrastructure, "
    "schedules, skip_late_after, concurrency_limit"
)
_SCHEDULE_KEYS = (
    "one of cron, interval or rrule, and optionally timezone, anchor (with interval), day_or "
    "(with cron), active, parameters"
)


class ScheduleEntry(BaseModel):
    """One schedule of a deployment in ``vivace.yaml``: exactly one of ``cron``, ``interval``
    and ``rrule``, as ``vivace.schedules`` takes them."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    cron: str | None = None
    interval: str | float | None = None  # "15m", "1h30m", "2d", "PT15M" or seconds
    rrule: str | None = None
    timezone: str | None = None
    anchor: dt.datetime | None = None
    day_or: bool | None = None
    active: bool = True
    parameters: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ScheduleEntry:
        self.to_schedule()  # its error, as a ValueError pydantic places at this entry
        return self

    def to_schedule(self) -> Schedule:
        """The ``vivace.schedules`` object this entry describes; ValueError saying what is
        wrong."""
        from vivace.exceptions import ConfigurationError
        from vivace.schedules import Cron, Interval, RRule, parse_interval

        kinds = [kind for kind in ("cron", "interval", "rrule") if getattr(self, kind) is not None]
        if len(kinds) != 1:
            given = " and ".join(kinds) if kinds else "none of them"
            raise ValueError(f"expected exactly one of cron, interval or rrule; got {given}")
        if self.anchor is not None and self.interval is None:
            raise ValueError("anchor is for an interval schedule only")
        if self.day_or is not None and self.cron is None:
            raise ValueError("day_or is for a cron schedule only")
        common: dict[str, Any] = {"active": self.active, "parameters": self.parameters}
        try:
            if self.cron is not None:
                day_or = True if self.day_or is None else self.day_or
                return Cron(self.cron, self.timezone, day_or=day_or, **common)
            if self.rrule is not None:
                return RRule(self.rrule, self.timezone, **common)
            every = self.interval
            step = parse_interval(every) if isinstance(every, str) else every
            assert step is not None
            return Interval(step, self.anchor, self.timezone, **common)
        except ConfigurationError as error:
            raise ValueError(str(error)) from None


class DeploymentEntry(BaseModel):
    """One deployment of ``vivace.yaml``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1)
    entrypoint: str
    work_queue: str = Field(default="default", min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    storage: str | None = None
    infrastructure: Any = None  # checked below: one message, not one per member of a union
    schedules: list[ScheduleEntry] | None = None  # None: keep the deployment's schedules
    skip_late_after: str | float | None = None  # "10m", "1h", or seconds
    concurrency_limit: int | None = Field(default=None, ge=1, strict=True)

    @field_validator("skip_late_after")
    @classmethod
    def _check_skip_late_after(cls, value: str | float | None) -> float | None:
        from vivace.deployments.runs import parse_duration
        from vivace.exceptions import ConfigurationError

        if value is None or not isinstance(value, str):
            if value is not None and not value >= 0:
                raise ValueError(f"{value} seconds is negative; expected 0 or more")
            return value
        try:
            return parse_duration(value)
        except ConfigurationError as error:
            raise ValueError(str(error)) from None

    @field_validator("entrypoint")
    @classmethod
    def _check_entrypoint(cls, value: str) -> str:
        from vivace.deployments.deploy import split_entrypoint

        try:
            path, _ = split_entrypoint(value)
        except DeploymentError as error:  # pydantic reports a ValueError, naming the key
            raise ValueError(str(error).removeprefix("entrypoint ")) from None
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise ValueError(f"{value!r} must name a file inside the project folder, relatively")
        return value

    @field_validator("infrastructure")
    @classmethod
    def _check_infrastructure(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip()):
            return value
        if isinstance(value, dict):
            if not isinstance(value.get("type"), str):
                raise ValueError("a mapping needs a 'type': process, docker, kubernetes or ecs")
            return value
        raise ValueError(
            f"expected a type name (process, docker, kubernetes, ecs), block:NAME or a mapping "
            f"with a 'type'; got {type(value).__name__}"
        )


class ProjectFile(BaseModel):
    """The whole of ``vivace.yaml``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    deployments: list[DeploymentEntry] = Field(min_length=1)


def find_project_file(start: str | os.PathLike[str] = ".") -> Path | None:
    """The nearest ``vivace.yaml`` in ``start`` or a folder above it."""
    folder = Path(start).expanduser().resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate / PROJECT_FILE
    return None


def read_project_file(path: str | os.PathLike[str]) -> ProjectFile:
    """The checked content of a ``vivace.yaml``; DeploymentError naming the entry and key of each
    problem."""
    import yaml

    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise DeploymentError(f"cannot read {str(file)!r}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(error, "problem", None) or error
        raise DeploymentError(f"{str(file)!r} is not valid YAML{line}: {problem}") from None
    if not isinstance(raw, dict):
        raise DeploymentError(
            f"{str(file)!r} must be a mapping with a 'deployments' list; got {type(raw).__name__}"
        )
    try:
        project = ProjectFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe(item, raw) for item in error.errors())
        raise DeploymentError(f"{str(file)!r}: {problems}") from None
    seen: set[str] = set()
    for entry in project.deployments:
        if entry.name in seen:
            raise DeploymentError(f"{str(file)!r}: deployment {entry.name!r} is listed twice")
        seen.add(entry.name)
    return project


def entry_named(project: ProjectFile, name: str, path: str | os.PathLike[str]) -> DeploymentEntry:
    """The entry called ``name``; DeploymentError listing the names there are."""
    for entry in project.deployments:
        if entry.name == name:
            return entry
    names = ", ".join(repr(entry.name) for entry in project.deployments)
    raise DeploymentError(f"{str(path)!r} has no deployment named {name!r}; it has {names}")


def deploy_entry(
    entry: DeploymentEntry, project: str | os.PathLike[str], **overrides: Any
) -> DeploymentRecord:
    """Deploy one entry from the project folder ``project`` (the yaml file's folder).

    ``overrides`` (``work_queue``, ``parameters``, ``tags``, ``description``, ``storage``,
    ``infrastructure``, ``schedules``, ``skip_late_after``, ``concurrency_limit``) replace the
    entry's values when not None; given ``parameters`` update its own.
    """
    return prepare_entry(entry, project, **overrides).deploy()


def prepare_entry(
    entry: DeploymentEntry,
    project: str | os.PathLike[str],
    *,
    parameter_texts: tuple[str, ...] | list[str] = (),
    **overrides: Any,
) -> PreparedDeployment:
    """``deploy_entry``'s checks (the flow loaded, every value checked), nothing uploaded.

    ``parameter_texts`` are ``--param k=v`` texts of the command line, read against this
    entry's flow's parameters (see ``parse_cli_parameters``) and updating its own.
    """
    from vivace.deployments.deploy import (
        load_entrypoint,
        prepare_deployment,
        resolve_storage,
        split_entrypoint,
    )
    from vivace.deployments.parameters import parameter_schema, parse_cli_parameters
    from vivace.settings import get_settings

    folder = Path(project).resolve()
    path, attribute = split_entrypoint(entry.entrypoint)
    try:
        flow = load_entrypoint(f"{folder / path}:{attribute}")
    except DeploymentError as error:
        raise DeploymentError(f"deployment {entry.name!r}: {error}") from None
    if parameter_texts:
        given = parse_cli_parameters(parameter_texts, parameter_schema(flow))
        overrides["parameters"] = {**(overrides.get("parameters") or {}), **given}
    options: dict[str, Any] = {
        "work_queue": entry.work_queue,
        "parameters": entry.parameters,
        "tags": entry.tags,
        "description": entry.description,
        # A folder named in the file is relative to the file, not to where the command ran.
        "storage": resolve_storage(entry.storage, get_settings().resolved_database_url, folder),
        "infrastructure": entry.infrastructure,
        "schedules": (
            None if entry.schedules is None else [item.to_schedule() for item in entry.schedules]
        ),
        "skip_late_after": entry.skip_late_after,
        "concurrency_limit": entry.concurrency_limit,
    }
    for key, value in overrides.items():
        if key not in options:
            raise TypeError(f"prepare_entry() got an unexpected option {key!r}")
        if value is not None:
            options[key] = {**entry.parameters, **value} if key == "parameters" else value
    try:
        return prepare_deployment(flow, entry.name, project_dir=folder, **options)
    except VivaceError as error:  # the same error, saying which entry it is about
        message = str(error)
        if f"deployment {entry.name!r}" in message:
            raise
        raise type(error)(f"deployment {entry.name!r}: {message}") from None


def _describe(item: Any, raw: dict[str, Any]) -> str:
    """One problem of the file: ``deployment 'nightly' (entry 1): key 'work_qeue' is unknown``,
    ``deployment 'nightly' (entry 1): schedule 0: key 'timezone': ...`` (entries count from 1,
    schedules by their positions, from 0, as ``vivace deployment schedule ls`` shows them)."""
    location = list(item["loc"])
    prefix = ""
    expected = "only 'deployments'"
    if len(location) >= 2 and location[0] == "deployments" and isinstance(location[1], int):
        index = location[1]
        entries = raw.get("deployments")
        name = None
        if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
            name = entries[index].get("name")
        prefix = f"deployment {name!r} (entry {index + 1})" if name else f"entry {index + 1}"
        location = location[2:]
        expected = _ENTRY_KEYS
        if len(location) >= 2 and location[0] == "schedules" and isinstance(location[1], int):
            prefix += f": schedule {location[1]}"  # its position, as `schedule ls` shows it
            location = location[2:]
            expected = _SCHEDULE_KEYS
    key = ".".join(str(part) for part in location)
    if item["type"] == "extra_forbidden":
        message = f"key {key!r} is unknown; expected {expected}"
    elif item["type"] == "missing":
        message = f"key {key!r} is missing"
    else:
        text = str(item["msg"]).removeprefix("Value error, ")
        message = f"key {key!r}: {text}" if key else text
    return f"{prefix}: {message}" if prefix else message
