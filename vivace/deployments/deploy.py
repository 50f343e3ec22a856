"""Deploying a flow: find its project, upload it, record what a worker needs to run it.

``Flow.deploy(...)`` and ``vivace deploy`` both end in :func:`deploy_flow`, which does, in order:

1. finds the flow's source file and its **project folder**: ``project_dir`` when given, else the
   nearest folder above the file (the file's own first) holding one of ``PROJECT_MARKERS``
   (``vivace.yaml``, ``.vivaceignore``, ``pyproject.toml``, ``.git``), else the file's own
   folder. A home folder or the filesystem root is never taken as a project found that way:
   a stray ``~/.git`` must not upload a whole home, and a flow file lying directly in one is
   refused unless ``project_dir`` says what to upload;
2. records the **entrypoint** relative to that folder, POSIX style (``flows/etl.py:etl``), and
   refuses a flow that could not be imported again from there: one defined inside a function or
   in an interactive session, or whose file is outside the project folder; and one with
   positional-only or ``*args`` parameters, which a run (parameters by name) cannot give. The
   flow's own name is recorded apart (``flow_name``), so a worker loading the file with
   ``vivace.results.resume.load_flow(entrypoint, flow_name)`` gets this flow even when the
   variable that holds it has another name;
3. checks the default ``parameters`` against the flow's parameter schema (a wrong one is refused
   naming the field; a missing required one is fine, each run must then give it), and the
   ``schedules``: each must be a vivace schedule (``Cron``, ``Interval``, ``RRule``), and its
   runs' parameters (the defaults under the schedule's own) must match the schema in full,
   required ones included, since nobody is there to give a missing one when the scheduler
   creates the run. ``schedules=None`` keeps the deployment's schedules as they are (a
   redeploy that says nothing about them); a list, even empty, replaces them. With them,
   ``skip_late_after`` (seconds or a timedelta; runs late by more than that are skipped, not
   started) and ``concurrency_limit`` (at most that many runs claimed and not over);
4. resolves the infrastructure (``process``, ``docker``, ..., ``block:NAME`` or an object) and
   the storage (a folder, an fsspec URL, ``block:NAME`` or a saved block's bare name);
5. uploads the project, and only then saves the deployment, so a failed upload records nothing.
   Saving a name that exists makes its next version; runs keep the version they were made from.
   When the save fails, what was uploaded is removed again (at best).

A ``GitHubRepository`` storage block is the code itself: nothing is uploaded, and the project
folder is the local checkout of that repository (the nearest folder above the flow's file, or
above ``project_dir``, holding ``.git``), so the entrypoint is relative to the repository's root.
The block's reference is resolved to a commit here, and the storage record pins it: the runs of
this version run that commit, whatever the branch holds later. The flow's file must be in the
repository at that commit; that is checked once here, rather than failing in every run.

Deployment names may hold ``/`` (``team/nightly``), but not end in ``/versions``,
``/flow-runs`` or ``/schedules``: the API could not tell such a name from the paths of a
deployment's versions, runs and schedules.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vivace.exceptions import DeploymentError, ResumeError, VivaceError

if TYPE_CHECKING:
    from vivace.engine.flows import Flow
    from vivace.infrastructure.base import Infrastructure
    from vivace.schedules import Schedule
    from vivace.store.deployments import DeploymentRecord, DeploymentSpec

PROJECT_MARKERS = ("vivace.yaml", ".vivaceignore", "pyproject.toml", ".git")
_MAX_NAME = 255
_RESERVED_ENDINGS = ("/versions", "/flow-runs", "/schedules")  # the API's paths below one
_MAX_LIMIT = 2**31 - 1  # a concurrency limit is stored as a 32-bit integer


def deploy_flow(flow: Flow[Any, Any], name: str, **options: Any) -> DeploymentRecord:
    """Deploy ``flow`` as ``name`` (see the module docstring); return the saved version.
    ``options`` are those of :func:`prepare_deployment` (``Flow.deploy`` names and types them)."""
    return prepare_deployment(flow, name, **options).deploy()


@dataclasses.dataclass(frozen=True)
class PreparedDeployment:
    """A deployment checked and ready to upload and save: ``deploy()`` does both.

    Preparing several before deploying any (``vivace deploy --all``) means an entry that fails
    a check (its flow, parameters, infrastructure, storage name, repository file) deploys
    nothing. The uploads and saves that follow can still fail (storage or database unreachable):
    the entries deployed before the one that failed stay deployed.
    """

    url: str
    project: Path
    storage: str | None
    spec: DeploymentSpec
    commit: str | None = None  # a repository's commit, resolved when checked

    def deploy(self) -> DeploymentRecord:
        """Upload the project, then save the deployment; a failed upload records nothing, and
        a failed save removes what was uploaded (at best)."""
        from vivace.deployments.storage import (
            default_storage,
            redact_credentials,
            remove_upload,
            upload_project,
        )
        from vivace.store.deployments import save_deployment

        try:
            stored = upload_project(self.project, self.storage, self.spec.name, commit=self.commit)
        except VivaceError:
            raise
        except Exception as error:
            target = redact_credentials(self.storage or default_storage())
            raise DeploymentError(
                f"cannot upload the project folder {str(self.project)!r} to {target!r}: "
                f"{type(error).__name__}: {redact_credentials(str(error))}"
            ) from error
        try:
            return save_deployment(self.url, dataclasses.replace(self.spec, storage=stored))
        except BaseException:
            remove_upload(stored)
            raise


def prepare_deployment(
    flow: Flow[Any, Any],
    name: str,
    *,
    work_queue: str = "default",
    parameters: dict[str, Any] | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    description: str | None = None,
    storage: str | None = None,
    infrastructure: Infrastructure | str | dict[str, Any] | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    schedules: Sequence[Schedule] | None = None,
    skip_late_after: dt.timedelta | float | None = None,
    concurrency_limit: int | None = None,
) -> PreparedDeployment:
    """Every check of ``deploy_flow``, without uploading or saving anything."""
    from vivace.deployments.parameters import parameter_schema
    from vivace.settings import get_settings
    from vivace.store.deployments import DeploymentSpec
    from vivace.store.work_queues import check_queue_name

    name = _check_name(name)
    work_queue = check_queue_name(_check_text(f"deployment {name!r}: work_queue", work_queue))
    checked_tags = check_tags(tags, f"deployment {name!r}: tags", DeploymentError)
    if description is not None and not isinstance(description, str):
        raise DeploymentError(
            f"deployment {name!r}: description must be text, got {type(description).__name__}"
        )
    url = get_settings().resolved_database_url
    source = source_file(flow)
    target = resolve_storage(storage, url)
    repository = _repository_block(target)
    project = project_folder(source, project_dir, git=repository is not None)
    relative = _relative_path(source, project, flow, uploaded=repository is None)
    entrypoint = f"{relative}:{_qualname(flow)}"
    _check_called_by_name(flow)
    schema = parameter_schema(flow)
    defaults = check_default_parameters(name, schema, parameters)
    checked_schedules = check_schedules(name, schema, defaults, schedules)
    late_seconds = check_skip_late_after(name, skip_late_after)
    limit = check_concurrency_limit(name, concurrency_limit)
    infrastructure_record = _infrastructure_record(name, infrastructure)
    commit = None
    if repository is not None:
        commit = _check_in_repository(repository, target, relative)
    spec = DeploymentSpec(
        name=name,
        flow_name=flow.name,
        entrypoint=entrypoint,
        storage={},  # known once uploaded
        parameter_schema=schema,
        parameters=defaults,
        infrastructure=infrastructure_record,
        work_queue_name=work_queue,
        tags=checked_tags,
        description=description,
        schedules=checked_schedules,
        skip_late_after=late_seconds,
        concurrency_limit=limit,
    )
    return PreparedDeployment(url, project, target, spec, commit)


def load_entrypoint(entrypoint: str) -> Flow[Any, Any]:
    """The flow that ``path/to/file.py:name`` names (the file may import its sibling modules).

    Raises DeploymentError saying what is wrong: not ``FILE.py:NAME``, no such file, the file
    fails to import, or the name is not a flow.
    """
    from vivace.results.resume import load_flow

    path, attribute = split_entrypoint(entrypoint)
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise DeploymentError(f"entrypoint {entrypoint!r}: there is no file {str(file)!r}")
    try:
        return load_flow(f"{file}:{attribute}")
    except ResumeError as error:
        raise DeploymentError(str(error)) from None


def split_entrypoint(entrypoint: str) -> tuple[str, str]:
    """``"flows/etl.py:etl"`` as ``("flows/etl.py", "etl")``; DeploymentError when it is not
    ``FILE.py:NAME``."""
    path, sep, attribute = entrypoint.rpartition(":")
    if not sep or not path.endswith(".py") or not attribute.strip():
        raise DeploymentError(
            f"entrypoint {entrypoint!r} is not FILE.py:NAME; expected e.g. flows/etl.py:etl"
        )
    return path, attribute.strip()


# -- the project and the entrypoint -------------------------------------------------------------


def source_file(flow: Flow[Any, Any]) -> Path:
    """The file the flow's function is defined in; DeploymentError when it cannot be loaded
    again from a file (defined inside a function, in an interactive session, a notebook)."""
    qualname = getattr(flow.fn, "__qualname__", "") or ""
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise DeploymentError(
            f"flow {flow.name!r} is defined inside a function ({qualname}), so a worker cannot "
            "import it; define it at the top level of a module in your project"
        )
    try:
        found = inspect.getsourcefile(flow.fn)
    except TypeError:
        found = None
    if found is None or not Path(found).is_file():
        raise DeploymentError(
            f"flow {flow.name!r} was not defined in a file (an interactive session or a "
            "notebook?), so a worker cannot import it; define it in a .py file of your project"
        )
    return Path(found).resolve()


def project_folder(
    source: Path, project_dir: str | os.PathLike[str] | None = None, *, git: bool = False
) -> Path:
    """The folder to upload for a flow defined in ``source`` (see the module docstring);
    with ``git``, the git checkout holding it."""
    if git:
        start = source.parent if project_dir is None else Path(project_dir).expanduser().resolve()
        for folder in (start, *start.parents):
            if (folder / ".git").exists():
                return folder
        raise DeploymentError(
            f"the storage is a GitHubRepository block, so the flow's file {str(source)!r} must "
            "be in a local git checkout of that repository (a folder above it holding .git); "
            "none was found"
        )
    if project_dir is not None:
        folder = Path(project_dir).expanduser().resolve()
        if not folder.is_dir():
            raise DeploymentError(f"project_dir {str(folder)!r} is not a folder")
        return folder
    stop = {Path.home().resolve(), Path(source.anchor)}
    for folder in source.parents:
        if folder in stop:
            break
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
    if source.parent in stop:
        raise DeploymentError(
            f"the flow's file {str(source)!r} lies directly in {str(source.parent)!r}, a home "
            "folder or the filesystem root, which is never uploaded whole (it may hold keys "
            "and credentials); move the file into a project folder (one holding vivace.yaml "
            "or pyproject.toml), or give project_dir= the folder to upload"
        )
    return source.parent


def _relative_path(source: Path, project: Path, flow: Flow[Any, Any], uploaded: bool) -> str:
    """The flow's file relative to the project folder; it must be in what is uploaded."""
    from vivace.blocks.filesystems import is_ignored
    from vivace.deployments.storage import IGNORE_FILE, ignore_patterns

    try:
        relative = source.relative_to(project).as_posix()
    except ValueError:
        raise DeploymentError(
            f"flow {flow.name!r} is defined in {str(source)!r}, outside the project folder "
            f"{str(project)!r}, so it would not be uploaded with it; deploy from a project "
            "folder that holds the file"
        ) from None
    if uploaded and is_ignored(relative, ignore_patterns(project)):
        raise DeploymentError(
            f"flow {flow.name!r} is defined in {relative!r}, which is not uploaded: it matches "
            f"an ignore pattern ({IGNORE_FILE} or the defaults, such as .venv); a worker could "
            "not import it"
        )
    return relative


def _qualname(flow: Flow[Any, Any]) -> str:
    """The name to load the flow by from its module: the function's qualified name, or the
    module-level variable that holds this very flow object (a ``with_options`` copy)."""
    qualname: str = flow.fn.__qualname__
    module = sys.modules.get(flow.fn.__module__)
    if module is None:
        return qualname
    found = _attribute(module, qualname)
    if found is flow or found is flow.fn:
        return qualname
    for attribute, value in vars(module).items():
        if value is flow:
            return attribute
    if getattr(found, "fn", None) is flow.fn:  # another flow of this function: load_flow picks
        return qualname  # the one named flow_name, or the worker renames it
    raise DeploymentError(
        f"flow {flow.name!r} cannot be found again in its module {module.__name__!r} under "
        f"{qualname!r}; define it (or assign it) at the top level of its module"
    )


def _attribute(module: Any, qualname: str) -> Any:
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            return None
    return found


# -- parameters, storage, infrastructure --------------------------------------------------------


def check_default_parameters(
    name: str, schema: dict[str, Any], parameters: dict[str, Any] | None
) -> dict[str, Any]:
    """The deployment's default parameters as JSON values, checked against the flow's schema
    (required ones may be missing: each run gives them). DeploymentError naming each wrong one."""
    from vivace.deployments.parameters import schema_problems

    if parameters is None:
        return {}
    values = _json_parameters(f"deployment {name!r}", "default parameter", parameters)
    lenient = {key: value for key, value in schema.items() if key != "required"}
    problems = schema_problems(lenient, values)
    if problems:
        raise DeploymentError(
            f"deployment {name!r}: default parameters do not match the flow's signature: "
            + "; ".join(problems)
        )
    return values


# -- schedules and run settings -----------------------------------------------------------------


def check_schedules(
    name: str,
    schema: dict[str, Any],
    defaults: dict[str, Any],
    schedules: Sequence[Schedule] | None,
) -> tuple[Schedule, ...] | None:
    """``schedules`` as a tuple (None stays None: keep the deployment's schedules).

    DeploymentError for something that is not a vivace schedule, a schedule listed twice, and
    parameters that its runs could not start with: the deployment's defaults under the
    schedule's own must match the flow's schema in full (a scheduled run has nobody to give a
    missing required parameter).
    """
    from vivace.schedules import Schedule

    if schedules is None:
        return None
    # A list or tuple: their order is the schedules' positions.
    if isinstance(schedules, str | bytes) or not isinstance(schedules, Sequence):
        raise DeploymentError(
            f"deployment {name!r}: schedules must be a list of schedules such as "
            "[Cron('0 9 * * *'), Interval(timedelta(hours=1))], got "
            f"{type(schedules).__name__}; give [] to remove the deployment's schedules, "
            "or None to keep them"
        )
    checked: list[Schedule] = []
    seen: dict[tuple[str, str], int] = {}
    # Numbered by position from 0, as `vivace deploy`, `schedule ls` and `--schedule` number them.
    for index, schedule in enumerate(schedules):
        if not isinstance(schedule, Schedule):
            raise DeploymentError(
                f"deployment {name!r}: schedule {index} is a {type(schedule).__name__} "
                f"({_short_repr(schedule)}), not a vivace schedule; expected Cron(...), "
                "Interval(...) or RRule(...) from vivace"
            )
        what = f"deployment {name!r}: schedule {index} ({schedule.describe()})"
        schedule = _with_json_parameters(what, schedule)
        key = (schedule.definition_key(), _json_key(schedule.parameters))
        if key in seen:
            raise DeploymentError(
                f"{what} repeats schedule {seen[key]}: both would create a run at the same "
                "times; expected each schedule once"
            )
        seen[key] = index
        _check_schedule_parameters(what, schema, {**defaults, **(schedule.parameters or {})})
        checked.append(schedule)
    return tuple(checked)


def _with_json_parameters(what: str, schedule: Schedule) -> Schedule:
    """The schedule, its parameters as the JSON values they are stored as."""
    parameters = schedule.parameters
    if parameters is None:
        return schedule
    values = _json_parameters(what, "parameter", parameters)
    if values == parameters:
        return schedule
    return dataclasses.replace(schedule, parameters=values)  # type: ignore[type-var]


def _json_parameters(what: str, noun: str, parameters: object) -> dict[str, Any]:
    """``parameters`` as the JSON values they are stored as; DeploymentError (starting with
    ``what``, calling each a ``noun``) for something that is not a dict or has no JSON form."""
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    if not isinstance(parameters, dict):
        raise DeploymentError(
            f"{what}: parameters must be a dict of name: value, got {type(parameters).__name__}"
        )
    values: dict[str, Any] = {}
    for key, value in parameters.items():
        try:
            values[str(key)] = to_jsonable_python(value)
        except PydanticSerializationError:
            raise DeploymentError(
                f"{what}: {noun} {key!r} is a {type(value).__name__}, which has no JSON form "
                "to store; give a JSON value (text, number, list, dict)"
            ) from None
    return values


def _check_schedule_parameters(what: str, schema: dict[str, Any], values: dict[str, Any]) -> None:
    from vivace.deployments.parameters import schema_problems

    problems = schema_problems(schema, values)
    if problems:
        raise DeploymentError(
            f"{what}: its runs' parameters (the deployment's defaults under the schedule's own) "
            "do not match the flow's signature: "
            + "; ".join(problems)
            + "; give the missing or wrong ones in the schedule's parameters or the "
            "deployment's"
        )


def check_skip_late_after(name: str, value: dt.timedelta | float | None) -> float | None:
    """``skip_late_after`` in seconds (None: never skip a late run); DeploymentError unless it
    is a timedelta or a number of seconds, 0 or more."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise DeploymentError(
            f"deployment {name!r}: skip_late_after must be a timedelta or seconds (None: never "
            f"skip a late run), got {type(value).__name__} {_short_repr(value)}"
        )
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise DeploymentError(
            f"deployment {name!r}: skip_late_after is {_short_repr(value)}; expected 0 or more "
            "seconds (runs later than that are skipped, not started)"
        )
    return seconds


def check_concurrency_limit(name: str, value: int | None) -> int | None:
    """``concurrency_limit`` (None: no limit); DeploymentError unless a whole number >= 1."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise DeploymentError(
            f"deployment {name!r}: concurrency_limit must be a whole number of runs (None: no "
            f"limit), got {type(value).__name__} {_short_repr(value)}"
        )
    if not 1 <= value <= _MAX_LIMIT:
        raise DeploymentError(
            f"deployment {name!r}: concurrency_limit is {value}; expected 1 to {_MAX_LIMIT} "
            "runs at a time (None: no limit)"
        )
    return value


def _json_key(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_storage(storage: str | None, url: str, base: Path | None = None) -> str | None:
    """The storage as ``upload_project`` takes it: None, a URL, an absolute folder (a relative
    one is taken from ``base``, default the current folder), or ``block:NAME`` (a bare name of
    a saved block is taken as that block)."""
    from vivace.blocks.store import read_block
    from vivace.results.storage import BLOCK_PREFIX

    if storage is None:
        return None
    if not isinstance(storage, str) or not storage.strip():
        raise DeploymentError(
            f"storage {storage!r} is not valid; expected a folder, an fsspec URL such as "
            "s3://bucket/flows, or block:NAME of a saved filesystem block"
        )
    text = storage.strip()
    if text.startswith(BLOCK_PREFIX) or "://" in text:
        return text
    folder = (base or Path.cwd()) / Path(text).expanduser()
    bare_name = "/" not in text and os.sep not in text and not folder.exists()
    if bare_name and read_block(url, text) is not None:
        return BLOCK_PREFIX + text
    return str(folder.resolve())


def _repository_block(storage: str | None) -> Any:
    """The GitHubRepository block that ``storage`` names, or None."""
    from vivace.blocks.core import Block
    from vivace.blocks.git import GitHubRepository
    from vivace.results.storage import BLOCK_PREFIX

    if storage is None or not storage.startswith(BLOCK_PREFIX):
        return None
    block = Block.load(storage[len(BLOCK_PREFIX) :].strip())
    return block if isinstance(block, GitHubRepository) else None


def _check_in_repository(repository: Any, storage: str | None, relative: str) -> str:
    """The commit the repository's reference names now, once the flow's file is seen in it."""
    from vivace.exceptions import BlockError

    reference = repository.reference or "its default branch"
    try:
        commit: str = repository.commit_id()
        repository.at_commit(commit).read_path(relative)
    except (BlockError, FileNotFoundError) as error:
        raise DeploymentError(
            f"the flow's file {relative!r} cannot be read from the repository of {storage!r} "
            f"({repository.repository_url} at {reference}); commit and push it first ({error})"
        ) from None
    return commit


def _infrastructure_record(
    name: str, infrastructure: Infrastructure | str | dict[str, Any] | None
) -> dict[str, Any]:
    from pydantic import ValidationError

    from vivace.infrastructure.base import infrastructure_from_record, resolve_infrastructure

    try:
        if isinstance(infrastructure, dict):
            return infrastructure_from_record(infrastructure).to_record()
        return resolve_infrastructure(infrastructure).to_record()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
            for item in error.errors()
        )
        raise DeploymentError(f"deployment {name!r}: infrastructure is not valid: {problems}")


def _check_text(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DeploymentError(f"{what} must be non-empty text, got {value!r}")
    return value.strip()


def _check_name(value: Any) -> str:
    import uuid

    name = _check_text("deployment name", value)
    if len(name) > _MAX_NAME:
        raise DeploymentError(
            f"deployment name {name[:40]!r}... is {len(name)} characters; expected at most "
            f"{_MAX_NAME}"
        )
    if name.endswith(_RESERVED_ENDINGS):
        raise DeploymentError(
            f"deployment name {name!r} ends in {name[name.rindex('/') :]!r}, which the API "
            "reads as the path of a deployment's versions, runs or schedules; expected another "
            "name"
        )
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise DeploymentError(
        f"deployment name {name!r} is a UUID, which would be read as a deployment's id; "
        "expected a name such as nightly-etl"
    )


def check_tags(
    tags: Any, what: str = "tags", error: type[VivaceError] = DeploymentError
) -> tuple[str, ...]:
    """``tags`` (None, or a list of non-empty texts) as a tuple without repeats; ``error``
    saying ``what`` must be when they are not."""
    if tags is None:
        return ()
    if isinstance(tags, str) or not all(isinstance(tag, str) and tag for tag in tags):
        raise error(f"{what} must be a list of non-empty texts, got {tags!r}")
    return tuple(dict.fromkeys(tags))


def _check_called_by_name(flow: Flow[Any, Any]) -> None:
    """A run calls the flow with its parameters by name: refuse what it could not give."""
    for parameter in flow.signature.parameters.values():
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            what = f"the positional-only parameter {parameter.name!r}"
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            what = f"*{parameter.name}"
        else:
            continue
        raise DeploymentError(
            f"flow {flow.name!r} takes {what}, which a deployment's run cannot give: runs call "
            "the flow with their parameters by name; expected parameters that can be given by "
            "name (no '/' or *args in the signature)"
        )
