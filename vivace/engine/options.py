"""Checks for decorator options, run where the option is given (not deep inside a run).

Each error names the flow or task, the option, the value given and what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

from vivace.exceptions import ConfigurationError


class _NotSet:
    """Sentinel for "option not given", where None is a meaningful value."""

    def __repr__(self) -> str:
        return "NOT_SET"


NOT_SET: Any = _NotSet()


def reject_unknown(what: str, unknown: dict[str, Any], known: Iterable[str]) -> None:
    """Raise for keyword options that do not exist, naming them and the ones that do."""
    if not unknown:
        return
    import difflib

    options = list(known)
    named = []
    for option in unknown:
        close = difflib.get_close_matches(option, options, n=1)
        named.append(f"{option!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigurationError(
        f"{what} got unknown option{'s' if len(named) > 1 else ''} {', '.join(named)}; "
        f"expected one of: {', '.join(options)}"
    )


def check_name(kind: str, name: str | None, fn: Callable[..., Any]) -> str:
    if name is None:
        return str(getattr(fn, "__name__", type(fn).__name__))
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"@{kind} name must be a non-empty string, got {name!r}")
    return name


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_retries(what: str, retries: Any) -> int:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigurationError(
            f"{what}: retries must be a whole number of 0 or more, got {retries!r}"
        )
    return retries


def check_retry_delay(what: str, delay: Any) -> Any:
    if callable(delay):
        return delay
    if isinstance(delay, (list, tuple)):
        if not all(_is_number(d) and d >= 0 for d in delay):
            raise ConfigurationError(
                f"{what}: retry_delay_seconds list must hold numbers of 0 or more, got {delay!r}"
            )
        return list(delay)
    if not _is_number(delay) or delay < 0:
        raise ConfigurationError(
            f"{what}: retry_delay_seconds must be seconds (0 or more), a list of them, or a "
            f"function of the attempt number; got {delay!r}"
        )
    return delay


def check_jitter(what: str, factor: Any) -> float | None:
    if factor is None:
        return None
    if not _is_number(factor) or factor < 0:
        raise ConfigurationError(
            f"{what}: retry_jitter_factor must be a number of 0 or more, got {factor!r}"
        )
    return float(factor)


def check_timeout(what: str, seconds: Any) -> float | None:
    if seconds is None:
        return None
    if not _is_number(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"{what}: timeout_seconds must be a positive number of seconds, got {seconds!r}"
        )
    return float(seconds)


def check_callable_or_none(what: str, option: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise ConfigurationError(f"{what}: {option} must be callable, got {value!r}")
    return value


def check_tags(what: str, tags: Iterable[str] | None) -> tuple[str, ...] | None:
    if tags is None:
        return None
    if isinstance(tags, str):
        raise ConfigurationError(
            f"{what}: tags must be a list of strings, got the string {tags!r}; "
            f"did you mean [{tags!r}]?"
        )
    values = tuple(tags)
    if not all(isinstance(tag, str) for tag in values):
        raise ConfigurationError(f"{what}: tags must all be strings, got {values!r}")
    return values or None


def check_bool(what: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{what}: {option} must be True or False, got {value!r}")
    return value


# Placement options a task may give its runner: Dask's ``client.submit`` keywords and Ray's
# ``.options()`` keywords. Each runner takes the ones it knows and ignores the others, so one task
# can run on either.
DASK_RUNNER_OPTIONS = ("resources", "priority", "workers", "allow_other_workers")
RAY_RUNNER_OPTIONS = ("num_cpus", "num_gpus", "memory", "resources")
RUNNER_OPTIONS = tuple(dict.fromkeys((*DASK_RUNNER_OPTIONS, *RAY_RUNNER_OPTIONS)))


def check_runner_options(what: str, options: Any) -> dict[str, Any] | None:
    """``runner_options``: a dict of known placement keys, or None."""
    if options is None:
        return None
    if not isinstance(options, dict):
        raise ConfigurationError(
            f"{what}: runner_options must be a dict such as {{'resources': {{'GPU': 1}}}}, "
            f"got {options!r}"
        )
    unknown = [key for key in options if key not in RUNNER_OPTIONS]
    if unknown:
        listed = ", ".join(repr(key) for key in unknown)
        raise ConfigurationError(
            f"{what}: runner_options got unknown key{'s' if len(unknown) > 1 else ''} {listed}; "
            f"expected any of: {', '.join(RUNNER_OPTIONS)} (Dask uses "
            f"{', '.join(DASK_RUNNER_OPTIONS)}; Ray uses {', '.join(RAY_RUNNER_OPTIONS)})"
        )
    resources = options.get("resources")
    if resources is not None and not (
        isinstance(resources, dict)
        and all(isinstance(k, str) and _is_number(v) and v >= 0 for k, v in resources.items())
    ):
        raise ConfigurationError(
            f"{what}: runner_options['resources'] must map resource names to amounts "
            f"(numbers of 0 or more), got {resources!r}"
        )
    for key in ("num_cpus", "num_gpus", "memory"):
        value = options.get(key)
        if value is not None and (not _is_number(value) or value < 0):
            raise ConfigurationError(
                f"{what}: runner_options[{key!r}] must be a number of 0 or more, got {value!r}"
            )
    priority = options.get("priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise ConfigurationError(
            f"{what}: runner_options['priority'] must be a whole number, got {priority!r}"
        )
    workers = options.get("workers")
    if workers is not None and not (
        isinstance(workers, str)
        or (isinstance(workers, (list, tuple, set)) and all(isinstance(w, str) for w in workers))
    ):
        raise ConfigurationError(
            f"{what}: runner_options['workers'] must be a worker address or a list of them, "
            f"got {workers!r}"
        )
    allow = options.get("allow_other_workers")
    if allow is not None and not isinstance(allow, bool):
        raise ConfigurationError(
            f"{what}: runner_options['allow_other_workers'] must be True or False, got {allow!r}"
        )
    return dict(options)
