"""Helpers of the concurrency-limit tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any


def most_at_once(spans: Iterable[tuple[dt.datetime | float, dt.datetime | float]]) -> int:
    """The most spans (start, end) open at the same moment; an end at the very moment another
    starts does not overlap it."""
    events: list[tuple[float, int]] = []
    for start, end in spans:
        events.append((_seconds(start), 1))
        events.append((_seconds(end), -1))
    events.sort()  # at equal times, -1 (an end) sorts before +1 (a start)
    open_now = most = 0
    for _, change in events:
        open_now += change
        most = max(most, open_now)
    return most


def run_spans(task_runs: Iterable[Any]) -> list[tuple[dt.datetime, dt.datetime]]:
    """(start_time, end_time) of stored task runs, each of which must have both."""
    spans = []
    for run in task_runs:
        assert run.start_time is not None and run.end_time is not None, run
        spans.append((run.start_time, run.end_time))
    return spans


def _seconds(value: dt.datetime | float) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)
