"""Cache policies: which calls of a task count as "the same", so a later one reuses a result.

Caching is opt-in, per task: ``@task(cache_policy=INPUTS)``. A call whose key matches an entry
in the cache index (in the database, so every process and cluster worker sees it) ends COMPLETED
``Cached`` with the persisted value, without running. Policies::

    INPUTS                 the call's arguments (all of them, defaults included)
    INPUTS - "client"      ... leaving out arguments that do not change the result
    TASK_SOURCE            the task function's source code
    INPUTS + TASK_SOURCE   both: a changed argument or a changed function misses
    NO_CACHE               never cache (to switch a task's caching off in with_options)

Keys are SHA-256 digests of a canonical encoding of the values (:mod:`vivace.results.hashing`),
so they are the same in every process and every Python run, and keys of built-in policies
include the task's ``task_key``: two tasks never share an entry. ``cache_key_fn(context,
parameters) -> str | None`` computes the key yourself (None: do not cache this call); its keys
are used as they are, so two tasks may share entries on purpose, except that a key longer than
255 characters (the index's column) is replaced by ``sha256:<its digest>``.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from vivace.exceptions import ConfigurationError
from vivace.results.hashing import UnhashableInputError, stable_digest

if TYPE_CHECKING:
    import uuid

    from vivace.engine.runs import TaskRun
    from vivace.engine.tasks import Task

__all__ = [
    "INPUTS",
    "NO_CACHE",
    "TASK_SOURCE",
    "CacheContext",
    "CacheKeyFn",
    "CachePolicy",
    "CompoundPolicy",
    "Inputs",
    "NoCache",
    "TaskSource",
]


class CacheContext:
    """What a policy or ``cache_key_fn`` may look at besides the arguments."""

    __slots__ = ("flow_run_id", "task", "task_run")

    def __init__(self, task: Task[Any, Any], task_run: TaskRun, flow_run_id: uuid.UUID | None):
        self.task = task
        self.task_run = task_run
        self.flow_run_id = flow_run_id

    @property
    def task_key(self) -> str:
        return self.task.task_key


class CachePolicy(abc.ABC):
    """Computes a call's cache key; ``+`` combines policies, ``-`` leaves out an argument."""

    @abc.abstractmethod
    def compute_key(self, context: CacheContext, parameters: dict[str, Any]) -> str | None:
        """The key for this call, or None to not cache it.

        Raises :class:`~vivace.results.hashing.UnhashableInputError` when an input has no stable
        encoding: the call then runs without caching, with a warning.
        """

    def prepare(self, task: Task[Any, Any]) -> None:
        """Work done once, when the task is decorated (not per call)."""

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return CompoundPolicy([self, other])

    def __sub__(self, name: str) -> CachePolicy:
        return self  # nothing to leave out: only INPUTS looks at arguments

    @property
    def keys_are_own(self) -> bool:
        """Whether the key is used as it is (a user's), instead of scoped to the task."""
        return False


class Inputs(CachePolicy):
    """The call's arguments, by parameter name, defaults applied; ``exclude`` left out."""

    def __init__(self, exclude: Iterable[str] = ()) -> None:
        self.exclude = frozenset(exclude)

    def prepare(self, task: Task[Any, Any]) -> None:
        """Refuse to leave out a name that is not a parameter: a typo would silently keep the
        argument in the key (and, for an unhashable one, warn on every call)."""
        try:
            parameters = inspect.signature(task.fn).parameters
        except (TypeError, ValueError):
            return
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return  # any name may arrive through **kwargs
        unknown = sorted(self.exclude - parameters.keys())
        if unknown:
            raise ConfigurationError(
                f"task {task.name!r}: cache_policy {self!r} leaves out "
                f"{', '.join(map(repr, unknown))}, which is not a parameter of "
                f"{task.name}{inspect.signature(task.fn)}"
            )

    def compute_key(self, context: CacheContext, parameters: dict[str, Any]) -> str | None:
        kept = {name: value for name, value in parameters.items() if name not in self.exclude}
        return stable_digest(kept)

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            raise TypeError(f"INPUTS - ... takes a parameter name, got {name!r}")
        return Inputs(self.exclude | {name})

    def __repr__(self) -> str:
        return "INPUTS" + "".join(f" - {name!r}" for name in sorted(self.exclude))


class TaskSource(CachePolicy):
    """The task function's source code (its bytecode when the source cannot be found)."""

    def prepare(self, task: Task[Any, Any]) -> None:
        task.source_digest = source_digest(task.fn)

    def compute_key(self, context: CacheContext, parameters: dict[str, Any]) -> str | None:
        digest: str | None = getattr(context.task, "source_digest", None)
        return digest if digest is not None else source_digest(context.task.fn)

    def __repr__(self) -> str:
        return "TASK_SOURCE"


class CacheKeyFn(CachePolicy):
    """``fn(context, parameters) -> str | None``: a key of your own (None: do not cache).

    Keys over 255 characters, or holding a NUL, are stored as ``sha256:<digest>``.
    """

    def __init__(self, fn: Callable[[CacheContext, dict[str, Any]], str | None]) -> None:
        self.fn = fn

    def compute_key(self, context: CacheContext, parameters: dict[str, Any]) -> str | None:
        key = self.fn(context, parameters)
        if key is not None and not isinstance(key, str):
            raise TypeError(f"cache_key_fn must return a string or None, got {key!r}")
        return key

    @property
    def keys_are_own(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"CacheKeyFn({getattr(self.fn, '__qualname__', self.fn)!r})"


class CompoundPolicy(CachePolicy):
    """Several policies: the key covers all of them; if any says "do not cache", none does."""

    def __init__(self, policies: Iterable[CachePolicy]) -> None:
        flat: list[CachePolicy] = []
        for policy in policies:
            flat.extend(policy.policies if isinstance(policy, CompoundPolicy) else [policy])
        self.policies: tuple[CachePolicy, ...] = tuple(flat)

    def prepare(self, task: Task[Any, Any]) -> None:
        for policy in self.policies:
            policy.prepare(task)

    def compute_key(self, context: CacheContext, parameters: dict[str, Any]) -> str | None:
        keys = []
        for policy in self.policies:
            key = policy.compute_key(context, parameters)
            if key is None:
                return None
            keys.append(key)
        return stable_digest(keys)

    def __sub__(self, name: str) -> CachePolicy:
        return CompoundPolicy([policy - name for policy in self.policies])

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.policies))


class NoCache(CachePolicy):
    """Never cache."""

    def compute_key(self, context: CacheContext, parameters: dict[str, Any]) -> str | None:
        return None

    def __repr__(self) -> str:
        return "NO_CACHE"


INPUTS = Inputs()
TASK_SOURCE = TaskSource()
NO_CACHE = NoCache()


def source_digest(fn: Callable[..., Any]) -> str:
    """A digest of a function's source; of its bytecode and constants if there is no source."""
    fn = inspect.unwrap(fn)
    try:
        source = inspect.getsource(fn)
        return hashlib.sha256(source.encode()).hexdigest()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            return stable_digest(f"{type(fn).__module__}.{type(fn).__qualname__}")
        return _code_digest(code)


def _code_digest(code: types.CodeType) -> str:
    """A digest of compiled code that is the same in every process.

    Not ``repr(co_consts)``: nested code objects print their memory address, and frozensets (of
    ``x in {"a", "b"}``) print in an order that depends on the per-process string hash.
    ``co_names`` counts too: ``return load(x)`` and ``return save(x)`` share their bytecode.
    """
    digest = hashlib.sha256(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            digest.update(b"c" + _code_digest(const).encode())
            continue
        try:
            digest.update(b"k" + stable_digest(const).encode())
        except UnhashableInputError:  # Ellipsis and the like: their repr is stable
            digest.update(b"r" + repr(const).encode())
    return digest.hexdigest()


MAX_KEY_LENGTH = 255  # the cache index's key column (and task_runs.cache_key)


def cache_key(policy: CachePolicy, context: CacheContext, parameters: dict[str, Any]) -> str | None:
    """The call's key in the cache index: the policy's, scoped to the task unless it is a user's.

    A user's key that would not fit the index's column is replaced by its digest: PostgreSQL
    would refuse it (and the writer would cut it), so the entry could never be found again.
    """
    key = policy.compute_key(context, parameters)
    if key is None:
        return None
    if policy.keys_are_own:
        if len(key) <= MAX_KEY_LENGTH and "\0" not in key:
            return key
        return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return hashlib.sha256(f"{context.task.task_key}\0{key}".encode()).hexdigest()
