"""Geometry of the dashboard's bar chart and a run's state timeline, computed for SVG templates.

Layout happens here, in plain Python with plain numbers, so templates only place elements at
coordinates and tests can check the arithmetic without a browser. Every chart is drawn in a fixed
``viewBox`` and scaled to the page's width by CSS.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence

from vivace.engine.states import FINAL_TYPES, StateType
from vivace.store.records import StateRecord

# Stacking order, bottom to top: finished work first, then what is still moving.
STATE_ORDER = (
    StateType.COMPLETED,
    StateType.FAILED,
    StateType.CRASHED,
    StateType.CANCELLED,
    StateType.CANCELLING,
    StateType.RUNNING,
    StateType.PAUSED,
    StateType.PENDING,
    StateType.SCHEDULED,
)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Runs counted by state over ``[start, end)``."""

    start: dt.datetime
    end: dt.datetime
    counts: Mapping[StateType, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclasses.dataclass(frozen=True)
class Segment:
    """One state's slice of a bar."""

    state: str
    count: int
    y: float
    height: float


@dataclasses.dataclass(frozen=True)
class Bar:
    """One bucket's stacked bar."""

    x: float
    width: float
    start: dt.datetime
    end: dt.datetime
    total: int
    segments: list[Segment]


@dataclasses.dataclass(frozen=True)
class Tick:
    """An axis mark at ``position`` (x or y, in viewBox units) labelled ``label``."""

    position: float
    label: str


@dataclasses.dataclass(frozen=True)
class BarChart:
    """A stacked bar chart in a ``width`` by ``height`` viewBox."""

    width: int
    height: int
    plot_left: int
    plot_bottom: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total: int


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return int(step * magnitude)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


def stacked_bars(
    buckets: Sequence[Bucket], *, label_format: str, width: int = 960, height: int = 220
) -> BarChart:
    """A bar per bucket, each split into its states' counts, bottom to top in ``STATE_ORDER``.

    ``label_format`` is the ``strftime`` format of the x-axis labels (``%H:%M`` for hours).
    """
    left, right, top, bottom = 44, 8, 10, 24
    plot_width, plot_height = width - left - right, height - top - bottom
    peak = nice_ceiling(max((bucket.total for bucket in buckets), default=0))
    slot = plot_width / max(len(buckets), 1)
    gap = min(4.0, slot * 0.2)
    bars = []
    for index, bucket in enumerate(buckets):
        y = float(top + plot_height)
        segments = []
        for state in STATE_ORDER:
            count = bucket.counts.get(state, 0)
            if not count:
                continue
            size = plot_height * count / peak
            y -= size
            segments.append(Segment(state.value, count, round(y, 2), round(size, 2)))
        bars.append(
            Bar(
                round(left + index * slot + gap / 2, 2),
                round(slot - gap, 2),
                bucket.start,
                bucket.end,
                bucket.total,
                segments,
            )
        )
    y_ticks = [
        Tick(round(top + plot_height * (1 - fraction), 2), f"{round(peak * fraction):,}")
        for fraction in (0, 0.5, 1)
    ]
    every = max(1, math.ceil(len(buckets) / 12))  # at most a dozen labels
    x_ticks = [
        Tick(round(left + (index + 0.5) * slot, 2), bucket.start.strftime(label_format))
        for index, bucket in enumerate(buckets)
        if index % every == 0
    ]
    return BarChart(
        width,
        height,
        left,
        top + plot_height,
        bars,
        y_ticks,
        x_ticks,
        sum(bucket.total for bucket in buckets),
    )


@dataclasses.dataclass(frozen=True)
class TimelineSpan:
    """A state held from ``start`` to ``end`` (None: still held), drawn at ``x``, ``width`` wide."""

    state: str
    name: str
    start: dt.datetime
    end: dt.datetime | None
    x: float
    width: float
    message: str | None

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else (self.end - self.start).total_seconds()


def state_timeline(
    states: Sequence[StateRecord], now: dt.datetime, *, width: int = 960
) -> list[TimelineSpan]:
    """The run's states as adjacent spans across ``width``, each as wide as it lasted.

    A final state has no duration, so it gets a fixed sliver at the end; every other span is at
    least 3 units wide so a state that lasted a millisecond can still be seen and hovered (less
    when a run has so many states, hundreds of retries, that 3 units each would not fit).
    """
    if not states:
        return []
    final = states[-1].type in FINAL_TYPES
    timed = states[:-1] if final else states
    ends = [state.timestamp for state in states[1:]] + [None]
    terminal = width * 0.04 if final else 0.0
    minimum = min(3.0, (width - terminal) / (2 * max(len(timed), 1)))
    available = width - terminal - minimum * len(timed)
    finish = states[-1].timestamp if final else max(now, states[-1].timestamp)
    total = max((finish - states[0].timestamp).total_seconds(), 1e-9)
    spans, x = [], 0.0
    for state, end in zip(timed, ends, strict=False):
        lasted = ((end or now) - state.timestamp).total_seconds()
        size = minimum + available * max(lasted, 0.0) / total
        spans.append(
            TimelineSpan(
                state.type.value,
                state.name,
                state.timestamp,
                end,
                round(x, 2),
                round(size, 2),
                state.message,
            )
        )
        x += size
    if final:
        last = states[-1]
        spans.append(
            TimelineSpan(
                last.type.value,
                last.name,
                last.timestamp,
                None,
                round(x, 2),
                round(width - x, 2),
                last.message,
            )
        )
    return spans
