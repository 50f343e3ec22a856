"""``@flow``: the decorator, its options, and calling a flow."""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from vivace.engine.options import (
    NOT_SET,
    check_bool,
    check_name,
    check_retries,
    check_retry_delay,
    check_timeout,
    reject_unknown,
)
from vivace.exceptions import ConfigurationError
from vivace.results.options import flow_result_options

if TYPE_CHECKING:
    import datetime
    import os
    from collections.abc import Sequence

    from vivace.schedules import Schedule
    from vivace.store.deployments import DeploymentRecord

P = ParamSpec("P")
R = TypeVar("R")

# Flow ids are derived from the name, so every process agrees on a flow's id without a lookup.
_FLOW_NAMESPACE = uuid.UUID("5c1d7a3e-93f4-4b0a-8f0e-2a6f1f3c9b10")

FLOW_OPTIONS = (
    "name",
    "task_runner",
    "retries",
    "retry_delay_seconds",
    "timeout_seconds",
    "validate_parameters",
    "log_prints",
    "persist_result",
    "result_storage",
    "result_serializer",
)


class Flow(Generic[P, R]):
    """A function whose every call is a recorded flow run with its own task runner."""

    def __init__(
        self,
        fn: Callable[P, R],
        name: str | None = None,
        task_runner: Any = None,
        retries: int = 0,
        retry_delay_seconds: float | list[float] | Callable[[int], float] = 0,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        log_prints: bool = False,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: Any = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"@flow expects a function, got {fn!r} ({type(fn).__name__})")
        from vivace.runners.base import TaskRunner

        self.fn = fn
        self.name = check_name("flow", name, fn)
        what = f"flow {self.name!r}"
        if task_runner is None:
            from vivace.runners.concurrent import ConcurrentTaskRunner

            task_runner = ConcurrentTaskRunner()
        elif isinstance(task_runner, type) and issubclass(task_runner, TaskRunner):
            task_runner = task_runner()
        if not isinstance(task_runner, TaskRunner):
            raise ConfigurationError(
                f"{what}: task_runner must be a task runner such as ConcurrentTaskRunner(), "
                f"got {task_runner!r}"
            )
        self.task_runner = task_runner
        self.retries = check_retries(what, retries)
        self.retry_delay_seconds = check_retry_delay(what, retry_delay_seconds)
        self.timeout_seconds = check_timeout(what, timeout_seconds)
        self.validate_parameters = check_bool(what, "validate_parameters", validate_parameters)
        self.log_prints = check_bool(what, "log_prints", log_prints)
        self.flow_id = uuid.uuid5(_FLOW_NAMESPACE, self.name)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._parameter_model: Any = NOT_SET
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        self.results = flow_result_options(what, persist_result, result_storage, result_serializer)
        self._entrypoint: Any = NOT_SET
        functools.update_wrapper(self, fn)

    @property
    def entrypoint(self) -> str | None:
        """Where the flow can be loaded from again (to resume its runs); found on first use."""
        if self._entrypoint is NOT_SET:
            from vivace.results.resume import entrypoint_of

            self._entrypoint = entrypoint_of(self.fn)
        return self._entrypoint  # type: ignore[no-any-return]

    def parameter_model(self) -> Any:
        """The pydantic model that validates this flow's parameters, built on first use."""
        if self._parameter_model is NOT_SET:
            from vivace.engine.parameters import build_parameter_model

            self._parameter_model = build_parameter_model(
                self.name, self.signature, getattr(self.fn, "__globals__", None)
            )
        return self._parameter_model

    def with_options(
        self,
        *,
        name: Any = NOT_SET,
        task_runner: Any = NOT_SET,
        retries: Any = NOT_SET,
        retry_delay_seconds: Any = NOT_SET,
        timeout_seconds: Any = NOT_SET,
        validate_parameters: Any = NOT_SET,
        log_prints: Any = NOT_SET,
        persist_result: Any = NOT_SET,
        result_storage: Any = NOT_SET,
        result_serializer: Any = NOT_SET,
        **unknown: Any,
    ) -> Flow[P, R]:
        """A copy of this flow with the given options changed."""
        reject_unknown(f"flow {self.name!r}: with_options()", unknown, FLOW_OPTIONS)
        given = {
            "name": name,
            "task_runner": task_runner,
            "retries": retries,
            "retry_delay_seconds": retry_delay_seconds,
            "timeout_seconds": timeout_seconds,
            "validate_parameters": validate_parameters,
            "log_prints": log_prints,
            "persist_result": persist_result,
            "result_storage": result_storage,
            "result_serializer": result_serializer,
        }
        options = {k: getattr(self, k) if v is NOT_SET else v for k, v in given.items()}
        return type(self)(self.fn, **options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow and return its value (raises if it fails).

        ``return_state=True`` returns the final State instead. An async flow returns a coroutine.
        """
        from vivace.engine.context import current_context
        from vivace.engine.flow_engine import run_flow_async, run_flow_sync
        from vivace.engine.loop import run_blocking

        return_state = bool(kwargs.pop("return_state", False))
        if self.is_async:
            coroutine = run_flow_async(self, args, kwargs, return_state)
            parent = current_context()
            if parent is not None and not parent.is_async:
                # An async subflow of sync code runs to the end, like an async task there.
                return run_blocking(coroutine)  # type: ignore[no-any-return]
            return coroutine  # type: ignore[return-value]
        return run_flow_sync(self, args, kwargs, return_state)  # type: ignore[no-any-return]

    def deploy(
        self,
        name: str,
        work_queue: str = "default",
        parameters: dict[str, Any] | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        description: str | None = None,
        storage: str | None = None,
        infrastructure: Any = None,
        project_dir: str | os.PathLike[str] | None = None,
        schedules: Sequence[Schedule] | None = None,
        skip_late_after: datetime.timedelta | float | None = None,
        concurrency_limit: int | None = None,
    ) -> DeploymentRecord:
        """Deploy this flow as ``name``: upload its project folder to ``storage`` and record
        where a worker finds it; a name deployed before gets its next version.

        ``storage`` is a folder, an fsspec URL (``s3://bucket/flows``) or ``block:NAME``
        (default: ``VIVACE_DEPLOYMENT_STORAGE`` or ``$VIVACE_HOME/deployments``);
        ``infrastructure`` a type (``"process"``, ``"docker"``...), ``block:NAME`` or an
        Infrastructure. See :mod:`vivace.deployments.deploy` for how the project folder and
        the entrypoint are found.

        ``schedules`` (``[Cron("0 9 * * 1-5", timezone="Europe/Lisbon"), Interval(...)]``)
        make the server's scheduler create runs; None (the default) keeps the schedules the
        deployment has, ``[]`` removes them. ``skip_late_after`` (seconds or a timedelta):
        a run that has not started that long after its scheduled time is skipped rather than
        started late; ``concurrency_limit``: at most that many of its runs at a time.
        """
        from vivace.deployments.deploy import deploy_flow

        return deploy_flow(
            self,
            name,
            work_queue=work_queue,
            parameters=parameters,
            tags=tags,
            description=description,
            storage=storage,
            infrastructure=infrastructure,
            project_dir=project_dir,
            schedules=schedules,
            skip_late_after=skip_late_after,
            concurrency_limit=concurrency_limit,
        )

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(
    *,
    name: str | None = None,
    task_runner: Any = None,
    retries: int = 0,
    retry_delay_seconds: float | list[float] | Callable[[int], float] = 0,
    timeout_seconds: float | None = None,
    validate_parameters: bool = True,
    log_prints: bool = False,
    persist_result: bool | None = None,
    result_storage: Any = None,
    result_serializer: Any = None,
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    task_runner: Any = None,
    retries: int = 0,
    retry_delay_seconds: float | list[float] | Callable[[int], float] = 0,
    timeout_seconds: float | None = None,
    validate_parameters: bool = True,
    log_prints: bool = False,
    persist_result: bool | None = None,
    result_storage: Any = None,
    result_serializer: Any = None,
    **unknown: Any,
) -> Any:
    """Make a function a flow: ``@flow`` or ``@flow(task_runner=ConcurrentTaskRunner())``.

    ``persist_result``, ``result_storage`` and ``result_serializer`` persist the flow's return
    value as for a task (see :func:`vivace.task`); its tasks keep their own result options.
    """
    reject_unknown("@flow", unknown, FLOW_OPTIONS)
    options: dict[str, Any] = dict(
        name=name,
        task_runner=task_runner,
        retries=retries,
        retry_delay_seconds=retry_delay_seconds,
        timeout_seconds=timeout_seconds,
        validate_parameters=validate_parameters,
        log_prints=log_prints,
        persist_result=persist_result,
        result_storage=result_storage,
        result_serializer=result_serializer,
    )
    if fn is None:
        return lambda f: Flow(f, **options)
    return Flow(fn, **options)
