"""The result options of a task or flow, checked and resolved once, when it is decorated.

``persist_result`` True persists every result; False never; None (the default) follows
``VIVACE_RESULTS_PERSIST_BY_DEFAULT``, unless ``result_storage``, ``result_serializer`` or a cache
policy is given, which imply True. A cache needs the value persisted, so ``persist_result=False``
with a cache policy is a configuration error. The engine reads only the resolved
:class:`ResultOptions`: None with ``persist_result=False``; for a default task (which persists
only if the setting says so when it runs) ``cache`` None and ``always`` False, so such a task pays
a few attribute reads per call and no I/O.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vivace.exceptions import ConfigurationError
from vivace.results.serializers import DEFAULT_SERIALIZER, Serializer, resolve_serializer

if TYPE_CHECKING:  # storage (pathlib, urllib) is imported only by tasks that name one
    from vivace.results.storage import ResultStorage

# The longest cache_expiration: an expiry time past the year 9999 cannot be stored.
MAX_EXPIRATION_SECONDS = 1000 * 365 * 86400


class ResultOptions:
    """How one task's or flow's results are persisted and cached."""

    __slots__ = (
        "always",
        "cache",
        "expiration",
        "refresh",
        "serializer",
        "signature",
        "storage",
    )

    def __init__(
        self,
        always: bool,
        storage: ResultStorage | None,
        serializer: Serializer,
        cache: Any = None,
        expiration: float | None = None,
        refresh: bool = False,
        signature: inspect.Signature | None = None,
    ) -> None:
        self.always = always  # False: only when VIVACE_RESULTS_PERSIST_BY_DEFAULT is on
        self.storage = storage  # None: the settings' local storage, where the run executes
        self.serializer = serializer
        self.cache = cache  # a CachePolicy, or None
        self.expiration = expiration  # seconds an entry stays valid; None: forever
        self.refresh = refresh  # run even on a hit, and replace the entry
        self.signature = signature  # to name the arguments a cache key is made of

    def parameters(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied (what INPUTS hashes)."""
        if self.signature is None:
            return {**{f"args[{i}]": value for i, value in enumerate(args)}, **kwargs}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return {**{f"args[{i}]": value for i, value in enumerate(args)}, **kwargs}
        bound.apply_defaults()
        return dict(bound.arguments)


def check_persist_result(what: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(
            f"{what}: persist_result must be True, False or None, got {value!r}"
        )
    return value


def check_expiration(what: str, value: Any) -> float | None:
    if value is None:
        return None
    import datetime as dt
    import numbers

    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = -1.0
    # Written this way round so that NaN fails too.
    if not 0 < seconds <= MAX_EXPIRATION_SECONDS:
        raise ConfigurationError(
            f"{what}: cache_expiration must be a positive timedelta or number of seconds, at "
            f"most 1,000 years (None: entries never expire), got {value!r}"
        )
    return seconds


def _storage_and_serializer(
    what: str, persist: bool | None, result_storage: Any, result_serializer: Any
) -> tuple[ResultStorage | None, Serializer] | None:
    """Where and how results are written (None with ``persist_result=False``, which takes
    neither option)."""
    if persist is False:
        if result_storage is not None or result_serializer is not None:
            raise ConfigurationError(
                f"{what}: result_storage and result_serializer mean nothing with "
                "persist_result=False"
            )
        return None
    storage = None
    if result_storage is not None:
        from vivace.results.storage import resolve_storage

        storage = resolve_storage(result_storage, f"{what}: result_storage")
    serializer = resolve_serializer(
        DEFAULT_SERIALIZER if result_serializer is None else result_serializer,
        f"{what}: result_serializer",
    )
    return storage, serializer


def task_result_options(
    what: str,
    fn: Callable[..., Any],
    task: Any,
    persist_result: bool | None,
    result_storage: Any,
    result_serializer: Any,
    cache_policy: Any,
    cache_key_fn: Any,
    cache_expiration: Any,
    refresh_cache: Any,
) -> ResultOptions | None:
    """Resolve a task's result and cache options (None: it never persists anything)."""
    persist = check_persist_result(what, persist_result)
    if not isinstance(refresh_cache, bool):
        raise ConfigurationError(
            f"{what}: refresh_cache must be True or False, got {refresh_cache!r}"
        )
    expiration = check_expiration(what, cache_expiration)
    if cache_policy is not None or cache_key_fn is not None:
        cache_policy = _cache_policy(what, cache_policy, cache_key_fn)
        if cache_policy is None:  # NO_CACHE (say, in with_options): the other cache options rest
            expiration, refresh_cache = None, False
    if cache_policy is None and (expiration is not None or refresh_cache):
        option = "cache_expiration" if expiration is not None else "refresh_cache"
        raise ConfigurationError(
            f"{what}: {option} needs a cache_policy or cache_key_fn to apply to"
        )
    if cache_policy is not None and persist is False:
        raise ConfigurationError(
            f"{what}: caching needs the result persisted, but persist_result=False; drop one "
            "of the two"
        )
    resolved = _storage_and_serializer(what, persist, result_storage, result_serializer)
    if resolved is None:
        return None
    storage, serializer = resolved
    always = bool(
        persist
        or cache_policy is not None
        or result_storage is not None
        or result_serializer is not None
    )
    signature = None
    if cache_policy is not None:
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        cache_policy.prepare(task)
    return ResultOptions(
        always, storage, serializer, cache_policy, expiration, refresh_cache, signature
    )


def _cache_policy(what: str, cache_policy: Any, cache_key_fn: Any) -> Any:
    """The policy the options name (None for NO_CACHE); imported only by tasks that cache."""
    from vivace.cache_policies import CacheKeyFn, CachePolicy, NoCache

    if cache_key_fn is not None:
        if not callable(cache_key_fn):
            raise ConfigurationError(
                f"{what}: cache_key_fn must be a function (context, parameters) -> str | None, "
                f"got {cache_key_fn!r}"
            )
        if cache_policy is not None:
            raise ConfigurationError(
                f"{what}: give cache_policy or cache_key_fn, not both (cache_key_fn is a policy "
                "of its own)"
            )
        return CacheKeyFn(cache_key_fn)
    if not isinstance(cache_policy, CachePolicy):
        raise ConfigurationError(
            f"{what}: cache_policy must be a policy from vivace.cache_policies such as INPUTS, "
            f"TASK_SOURCE or INPUTS + TASK_SOURCE, got {cache_policy!r}"
        )
    return None if isinstance(cache_policy, NoCache) else cache_policy


def flow_result_options(
    what: str, persist_result: Any, result_storage: Any, result_serializer: Any
) -> ResultOptions | None:
    """Resolve a flow's result options (None: its result is never persisted)."""
    persist = check_persist_result(what, persist_result)
    resolved = _storage_and_serializer(what, persist, result_storage, result_serializer)
    if resolved is None:
        return None
    storage, serializer = resolved
    always = bool(persist or result_storage is not None or result_serializer is not None)
    return ResultOptions(always, storage, serializer)
