"""What runs inside a Ray worker for :class:`~vivace.runners.ray.RayTaskRunner`.

:func:`run_one` and :func:`run_batch` are the functions the runner makes Ray remote functions of;
Ray pickles them by reference, so workers import them from this module. Nothing here imports Ray.

- **One argument**: the run's call (or a batch's calls) with the database URL, as bytes the
  driver pickled (:mod:`vivace.runners._ray_payload`) or as objects Ray pickled itself.
- **One return per run**: the Ray task of one run returns the run's value, or a small
  :class:`~vivace.engine.remote.RemoteFailure` if it did not complete, kept under
  ``FAILURE_LIMIT`` bytes (the driver takes an ended run's object of more than
  :data:`~vivace.runners._ray_completion.FETCH_LIMIT` bytes for a value without fetching it, see
  :mod:`vivace.runners._ray_completion`). A batch's Ray task has **two returns**: a small
  *outcome* (completed; completed with scalar values, which Ray inlines in the reply anyway; or
  the failures) and the *values*, which stay on the cluster until ``future.result()`` asks.
- **Small values travel as bytes** (:func:`encode_value`): a scalar or a short string returned
  by a one-run Ray task is pickled here behind the ``ENCODED`` prefix. Ray hands bytes over as
  they are, and its own deserialization of a small object costs the driver ~40 us more CPU than
  of bytes when ``result()`` has just woken from waiting for the run (cold caches), which is
  where a flow collecting its results one by one spends its time. Bytes a task returns that
  happen to start with the prefix are encoded too, so :func:`decode_value` is unambiguous; the
  driver decodes what it fetches, a worker what it receives from upstream runs
  (:func:`decode_upstreams`). Batch values are lists, never encoded.
- **Records**: a worker does not write out its records before its Ray task returns (one
  transaction per Ray task would cost more than the task). When a run ends COMPLETED, the worker
  asks a helper thread of its process to flush its writer as soon as no run has completed there
  for ``FLUSH_IDLE`` seconds (the last runs of a flow run: the driver waits for them), and within
  ``FLUSH_SOON`` seconds at the latest, whatever ``VIVACE_RECORDER_FLUSH_INTERVAL`` says (while
  runs keep completing, the writer's own interval comes first: one transaction per interval, off
  the task's path); a run that did not complete is flushed before its Ray task returns, since
  its failure is logged after its final state. Ray gives no way to run code on every worker
  process, so the driver waits for these records in the database instead
  (:meth:`~vivace.runners.ray.RayTaskRunner.flush_records`).
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import traceback
from typing import Any

from vivace.engine.remote import (
    PartialBatch,
    RemoteFailure,
    flush_process_records,
    run_remote,
    run_remote_batch,
)
from vivace.engine.states import describe_exception
from vivace.exceptions import VivaceError

logger = logging.getLogger("vivace.runners.ray")  # the Ray runner's one logger

FLUSH_TIMEOUT = 30.0  # seconds a worker may take to write out its records
# Seconds after a completed run by which its worker writes out its records, at the latest: while
# runs keep completing, the writer's own interval (0.1 s by default) sets the pace; at 0.05 s a
# busy worker wrote one small transaction per ~10 runs, and its writer cost more than its runs.
FLUSH_SOON = 0.25
FLUSH_IDLE = 0.01  # seconds without a completed run after which a worker writes out at once
FAILURE_LIMIT = 64 * 1024  # bytes a run's RemoteFailure pickles to, at most (roughly)
MESSAGE_LIMIT = 4096  # bytes (UTF-8) of a failure's message, and of a too-big exception's
TRACEBACK_LIMIT = 16_384  # bytes of a too-big exception's traceback text kept
ERROR_LIMIT = FAILURE_LIMIT - MESSAGE_LIMIT - 1024  # bytes of the pickled exception
# Values Ray inlines in the task's reply anyway: they come back with the outcome.
SMALL_TYPES = frozenset({int, float, complex, bool, type(None)})

# Outcome kinds (the first return of every Ray task).
DONE = 0  # completed; the value stays on the cluster
DONE_SMALL = 1  # completed; the outcome carries the (scalar) value or values too
NOT_DONE = 2  # some run did not complete: the outcome carries the RemoteFailure / PartialBatch


def run_one(payload: Any, *remote_values: Any) -> Any:
    """The Ray task of one run: its value (encoded if small), or its RemoteFailure (kept
    small)."""
    database_url, call = _unpack(payload)
    if remote_values:
        remote_values = decode_upstreams([call], remote_values)
    value = run_remote(call, *remote_values)
    if type(value) is RemoteFailure:
        # A failure is logged after its final state: written out before the driver hears of it.
        flush_process_records(database_url, FLUSH_TIMEOUT)
        return _within_limit(value)
    _flush_soon(database_url)
    return encode_value(value)


def run_batch(payload: Any, *remote_values: Any) -> tuple[Any, Any]:
    """The Ray task of a batch of runs (``task.map(batch_size=K)``, or one run through Ray
    Client): its outcome and its values."""
    database_url, calls = _unpack(payload)
    if remote_values:
        remote_values = decode_upstreams(calls, remote_values)
    return _outcome(run_remote_batch(calls, *remote_values), database_url)


ENCODED = b"\x00vivace-value\x00"  # what an encoded value's bytes start with
ENCODED_STR_LIMIT = 4096  # characters: a longer string travels as Ray serializes it


def encode_value(value: Any) -> Any:
    """A one-run Ray task's value as it travels: small values as ``ENCODED`` + their pickle."""
    kind = type(value)
    if (
        kind in SMALL_TYPES
        or (kind is str and len(value) <= ENCODED_STR_LIMIT)
        # Ray hands any bytes (a subclass too) back as plain bytes: those with the prefix are
        # encoded, so that decode_value never mistakes them for an encoded value.
        or (isinstance(value, bytes) and value.startswith(ENCODED))
    ):
        return ENCODED + pickle.dumps(value, protocol=5)
    return value


def decode_value(value: Any) -> Any:
    """What :func:`encode_value` was given."""
    if type(value) is bytes and value.startswith(ENCODED):
        return pickle.loads(memoryview(value)[len(ENCODED) :])
    return value


def decode_upstreams(calls: list[Any], remote_values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The values of the upstream Ray tasks the calls' ``refs`` point at, decoded where they
    are a one-run Ray task's value (no batch item: a batch's values are a list)."""
    single = {
        source
        for call in calls
        for _, _, source, item in call.refs or ()
        if item is None and type(source) is int
    }
    if not single:
        return remote_values
    return tuple(
        decode_value(value) if position in single else value
        for position, value in enumerate(remote_values)
    )


def _within_limit(failure: RemoteFailure) -> RemoteFailure:
    """``failure`` as it travels back: under ``FAILURE_LIMIT`` bytes, so that the driver never
    takes it for a value (a huge exception's type, the start of its message and the end of its
    traceback are kept)."""
    message, error = failure.message, failure.error
    if message is not None:
        message = _cut(message, MESSAGE_LIMIT)
    if error is not None and len(error) > ERROR_LIMIT:
        error = _smaller_error(failure.unpack(), len(error))
    if message is failure.message and error is failure.error:
        return failure
    return RemoteFailure(failure.type, failure.name, message, failure.timestamp, error)


def _smaller_error(original: BaseException, size: int) -> bytes:
    """A pickled VivaceError standing in for an exception that pickles to ``size`` bytes."""
    frames = "".join(traceback.format_tb(original.__traceback__))  # without the message
    encoded = frames.encode("utf-8", "replace")
    if len(encoded) > TRACEBACK_LIMIT:
        frames = "...\n" + encoded[-TRACEBACK_LIMIT:].decode("utf-8", "ignore")
    substitute = VivaceError(
        f"{_cut(describe_exception(original), MESSAGE_LIMIT)} (the exception pickles to "
        f"{size:,} bytes, too many to travel back from the Ray worker: its type and message "
        "are here, and the end of its traceback)"
    )
    substitute.add_note(f"Traceback on the worker:\n{frames}")
    return pickle.dumps(substitute, protocol=5)


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` bytes of UTF-8, ending in "..." where it was cut."""
    if len(text) <= limit // 4:  # even four bytes a character fit
        return text
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "..."


def _unpack(payload: Any) -> Any:
    return pickle.loads(payload) if type(payload) is bytes else payload


def _outcome(value: Any, database_url: str) -> tuple[Any, Any]:
    kind = type(value)
    if kind is RemoteFailure or kind is PartialBatch:
        # A failure is logged after its final state: written out before the driver hears of it.
        flush_process_records(database_url, FLUSH_TIMEOUT)
        return (NOT_DONE, value), value
    _flush_soon(database_url)
    if kind in SMALL_TYPES:
        return (DONE_SMALL, value), value
    if kind is list and all(type(item) in SMALL_TYPES for item in value):
        return (DONE_SMALL, value), value
    return (DONE, None), value


_soon = threading.Event()  # set: some run completed since the helper's last flush
_soon_urls: set[str] = set()
_last_completed = 0.0  # time.monotonic() when this worker last completed a run
_flusher: threading.Thread | None = None
_flusher_lock = threading.Lock()


def _flush_soon(database_url: str) -> None:
    """Have this process's writer for ``database_url`` write out within ``FLUSH_SOON`` seconds,
    or once no run has completed here for ``FLUSH_IDLE`` seconds, whichever comes first.

    Called after the run's records are queued. The helper clears the event before it flushes, so
    records queued before a nudge it has not seen are behind that flush or the next one.
    """
    global _flusher, _last_completed
    _soon_urls.add(database_url)
    _last_completed = time.monotonic()
    if not _soon.is_set():
        _soon.set()
    if _flusher is None:
        with _flusher_lock:
            if _flusher is None:
                _flusher = threading.Thread(
                    target=_flush_loop, name="vivace-ray-flush", daemon=True
                )
                _flusher.start()


def _flush_loop() -> None:
    while True:
        _soon.wait()
        # One transaction for the runs that complete meanwhile; at once when they stop coming
        # (the last runs of a flow run: the driver is waiting for them at its end).
        latest = time.monotonic() + FLUSH_SOON
        while True:
            now = time.monotonic()
            quiet = _last_completed + FLUSH_IDLE
            if now >= latest or now >= quiet:
                break
            time.sleep(min(latest, quiet) - now)
        _soon.clear()
        for url in list(_soon_urls):
            try:
                flush_process_records(url, FLUSH_TIMEOUT)
            except Exception:  # the helper must outlive any one failed flush
                logger.exception("vivace could not flush a Ray worker's records")
