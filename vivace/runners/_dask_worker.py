"""The DaskTaskRunner's part on a worker: a run whose small value rides back to the driver.

Without it, a ``result()`` that waited for its run costs a gather: the driver asks the scheduler,
which asks the worker, one round trip through three processes per value (the workers' event
loops spent ~38% more CPU per task than raw Dask's, three quarters of it on those). A small value
instead travels as a Dask event on a topic of the flow run's own: the worker logs it before
the run's completion goes out on the same stream, and the scheduler forwards it to the driver
on the stream that then brings the completion, so it is there when the driver settles the run.
The scheduler keeps a topic's last events (``distributed.admin.low-level-log-length``, 1,000 by
default); the runner drops the topic when the flow run ends (:func:`drop_topic`). Until then
the scheduler's other clients could read those small values (``Client.get_events``), as they
could gather any result on the cluster. A value that arrives with a type other than the one
the scheduler reports came from an earlier attempt of the cluster task (its worker died
between the two messages, and Dask ran it again): the driver fetches the value instead; an
earlier attempt's value of the same type would be taken (Dask re-runs a task only on a
cluster whose ``allowed-failures`` is above 0, not on the temporary one vivace starts).
"""

from __future__ import annotations

from typing import Any

from vivace.engine.remote import RemoteCall, run_remote

VALUE_EVENT = "vivace-value"  # first item of vivace's events, told apart from anything else
TOPIC_PREFIX = "vivace-values-"
RIDING_STR_LIMIT = 1_024  # characters: a longer string is fetched when asked for
_MSGPACK_INTS = range(-(2**63), 2**64)  # what msgpack carries as an integer
_RUNNING = frozenset({"executing", "long-running"})  # a worker's states of a task still wanted


def run_riding(topic: str, call: RemoteCall, *remote_values: Any) -> Any:
    """``run_remote``; a small value is also sent to ``topic`` (see the module docs)."""
    value = run_remote(call, *remote_values)
    if rides(value):
        try:
            from distributed import get_worker

            worker = get_worker()
            key = worker.get_current_task()
            task = worker.state.tasks.get(key)
            # Not after a cancel (the flow run ended): its topic may be dropped already, and an
            # event would make the scheduler keep it again.
            if task is not None and task.state in _RUNNING:
                worker.log_event(topic, (VALUE_EVENT, key, value))
        except Exception:  # the driver fetches the value instead: nothing is lost
            pass
    return value


def rides(value: Any) -> bool:
    """Whether ``value`` is small and comes back through msgpack as the same type and value."""
    kind = type(value)
    if kind is int:
        return value in _MSGPACK_INTS
    if kind is str:
        # A string with a lone surrogate has no UTF-8 form: it would break the worker's stream.
        return len(value) <= RIDING_STR_LIMIT and (value.isascii() or _encodable(value))
    return kind is float or kind is bool or value is None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def drop_topic(topic: str, dask_scheduler: Any = None) -> bool:
    """Run on the scheduler when the flow run ends: forget ``topic`` and the events it kept.

    Also forgets the value topics no connected client listens to: those of flow runs whose
    driver went away without dropping theirs, or that an event made again after the drop (a
    run that was executing when its flow run ended, cancelled, finishing just then). Dask has
    no public call for it (a topic lives as long as the scheduler); False if this version of
    distributed keeps its topics elsewhere.
    """
    topics = getattr(getattr(dask_scheduler, "_broker", None), "_topics", None)
    clients = getattr(dask_scheduler, "clients", None)
    if not isinstance(topics, dict) or clients is None or not topic.startswith(TOPIC_PREFIX):
        return False
    topics.pop(topic, None)
    for name, other in list(topics.items()):
        if name.startswith(TOPIC_PREFIX) and not any(
            subscriber in clients for subscriber in getattr(other, "subscribers", ())
        ):
            del topics[name]
    return True
