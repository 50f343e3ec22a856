"""Schedules of a deployment: when its runs should start.

Three kinds, each in an IANA time zone (``None``: UTC)::

    Cron("0 9 * * 1-5", timezone="Europe/Lisbon")         # 09:00 Lisbon time, Monday to Friday
    Interval(timedelta(minutes=15))                         # every 15 minutes
    Interval(timedelta(days=1), anchor=datetime(2027, 1, 1, 9), timezone="America/New_York")
    RRule("FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=6", timezone="Asia/Tokyo")

A schedule's times are when its runs should *start* (not the end of an interval, as in Airflow).
They are computed in local wall-clock time and then placed on the time line, which is what makes
daylight-saving changes behave (RFC 5545 does the same):

- a local time that does not exist (in the hour skipped at spring-forward) is moved forward by
  the gap: a 01:30 run on that day starts at 02:30 local, once;
- a local time that happens twice (in the hour repeated at fall-back) runs once, at its first
  occurrence; only schedules that fire every hour (a cron whose hour field is ``*``, an hourly or
  finer RRule) also fire in the repeated hour, so they keep their pace in real time;
- hence a daily 09:00 run starts at 09:00 local every day, neither skipped nor doubled.

An :class:`Interval` of a whole number of days steps in local calendar days from its anchor (a
daily 09:00 stays at 09:00 local across DST); a shorter one steps in absolute time. The default
anchor is a fixed moment, 2001-01-01 00:00 local (a Monday), so the times never drift between
scheduler loops or processes; an RRule without DTSTART starts there too.

Schedules are values: frozen, hashable, equal when they say the same. ``to_dict()`` is what the
database stores and ``schedule_from_dict`` reads it back; ``definition_key()`` identifies the
definition (a redeploy keeps a schedule whose key and parameters did not change). croniter and
dateutil are imported only when a schedule is made or computed, so ``import vivace`` stays fast.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import functools
import json
import re
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from vivace.exceptions import ConfigurationError

UTC = dt.UTC
EPOCH = dt.datetime(2001, 1, 1)
"""The default anchor (Interval) and DTSTART (RRule), in the schedule's zone: a Monday, the 1st."""
# More than any daylight-saving change moves a clock (an hour, rarely two): near such a change,
# local times are looked at this much beyond the range asked.
_MARGIN = dt.timedelta(hours=3)
_NO_MARGIN = dt.timedelta(0)
_DAY = dt.timedelta(days=1)


class Schedule:
    """What every schedule has; see :class:`Cron`, :class:`Interval` and :class:`RRule`.

    ``timezone``: an IANA name such as "Europe/Lisbon" (None: UTC). ``active``: whether the
    schedule starts active when first deployed (a redeploy keeps the state it has). ``parameters``:
    run parameters of this schedule's runs, over the deployment's defaults.
    """

    kind: ClassVar[str]
    timezone: str | None
    active: bool
    parameters: dict[str, Any] | None

    def next_times(self, after: dt.datetime, until: dt.datetime, limit: int) -> list[dt.datetime]:
        """The schedule's times ``t`` with ``after < t <= until``, at most ``limit``, ascending,
        as aware UTC datetimes. ``after`` and ``until`` must be aware."""
        after, until = _aware(after, "after"), _aware(until, "until")
        if limit <= 0 or until <= after:
            return []
        return self._times(after, until, limit)

    def to_dict(self) -> dict[str, Any]:
        """The definition as JSON (without ``active`` and ``parameters``)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for people: "cron 0 9 * * 1-5 in Europe/Lisbon"."""
        raise NotImplementedError

    def definition_key(self) -> str:
        """A canonical string of ``to_dict()``: equal for equal definitions."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def _times(self, after: dt.datetime, until: dt.datetime, limit: int) -> list[dt.datetime]:
        raise NotImplementedError

    # Equal when they say the same (definition, active, parameters); hashed by definition only.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule) or type(other) is not type(self):
            return NotImplemented
        return (self.definition_key(), self.active, _canonical(self.parameters)) == (
            other.definition_key(),
            other.active,
            _canonical(other.parameters),
        )

    def __hash__(self) -> int:
        return hash(self.definition_key())

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The schedule's time zone (UTC when none was given)."""
        return _zone(self.timezone)

    def _check_common(self) -> None:
        _zone(self.timezone)
        if not isinstance(self.active, bool):
            raise ConfigurationError(
                f"schedule option active={self.active!r} is not valid; expected True or False"
            )
        if self.parameters is not None:
            if not isinstance(self.parameters, dict) or not all(
                isinstance(name, str) for name in self.parameters
            ):
                raise ConfigurationError(
                    f"schedule parameters {self.parameters!r} are not valid; expected a dict of "
                    "parameter names to values"
                )
            try:
                json.dumps(self.parameters)
            except (TypeError, ValueError) as error:
                raise ConfigurationError(
                    f"schedule parameters {self.parameters!r} cannot be stored as JSON ({error}); "
                    "expected JSON values (str, numbers, bools, None, lists, dicts)"
                ) from None


@dataclasses.dataclass(frozen=True, eq=False)
class Cron(Schedule):
    """A cron expression in a time zone: ``Cron("0 9 * * 1-5", timezone="Europe/Lisbon")``.

    Five fields (minute hour day-of-month month day-of-week), as croniter reads them (with its
    ``@daily``-style aliases and an optional sixth field of seconds). ``day_or``: when both the
    day of month and the day of week are restricted, a day matching either fires (cron's rule),
    or with ``day_or=False`` only a day matching both.
    """

    kind: ClassVar[str] = "cron"
    expression: str
    timezone: str | None = None
    _: dataclasses.KW_ONLY
    day_or: bool = True
    active: bool = True
    parameters: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise ConfigurationError(
                f"cron expression {self.expression!r} is not valid; expected a string such as "
                "'0 9 * * 1-5'"
            )
        object.__setattr__(self, "expression", " ".join(self.expression.split()))
        self._check_common()
        _check_cron(self.expression, self.day_or)

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.expression, "timezone": self.timezone, "day_or": self.day_or}

    def describe(self) -> str:
        both = "" if self.day_or else " (day of month and day of week both)"
        return f"cron {self.expression}{both} in {self.timezone or 'UTC'}"

    def _times(self, after: dt.datetime, until: dt.datetime, limit: int) -> list[dt.datetime]:
        from croniter import CroniterBadDateError, croniter

        daily = _cron_daily(self.expression, self.day_or)

        def candidates(start: dt.datetime) -> Iterator[dt.datetime]:
            if daily is not None:
                yield from daily.after(start)
                return
            iterator = croniter(self.expression, start, day_or=self.day_or)
            while True:
                try:
                    yield iterator.get_next(dt.datetime)
                except CroniterBadDateError:  # no more matching dates
                    return

        repeat = _cron_every_hour(self.expression, self.day_or)
        return _collect(candidates, self.zone, repeat, after, until, limit)


@dataclasses.dataclass(frozen=True, eq=False)
class Interval(Schedule):
    """Every ``every`` (a timedelta, or seconds) from ``anchor``: ``Interval(timedelta(hours=6))``.

    A whole number of days steps in local calendar days at the anchor's local time; anything
    shorter steps in absolute time. ``anchor``: a time the schedule fires at (a naive one is local
    time in ``timezone``); default 2001-01-01 00:00 local, so daily runs are at midnight and
    quarter-hourly ones on the quarter hours.
    """

    kind: ClassVar[str] = "interval"
    # A timedelta once made (a number of seconds is converted).
    every: dt.timedelta | float
    anchor: dt.datetime | None = None
    timezone: str | None = None
    _: dataclasses.KW_ONLY
    active: bool = True
    parameters: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        every = self.every
        if isinstance(every, (int, float)) and not isinstance(every, bool):
            try:
                every = dt.timedelta(seconds=every)
            except (OverflowError, ValueError):  # inf, nan, too large
                every = dt.timedelta(0)
        if not isinstance(every, dt.timedelta) or every <= dt.timedelta(0):
            raise ConfigurationError(
                f"interval {self.every!r} is not valid; expected a positive timedelta or number "
                "of seconds, such as timedelta(minutes=15)"
            )
        object.__setattr__(self, "every", every)
        if self.anchor is not None and not isinstance(self.anchor, dt.datetime):
            raise ConfigurationError(
                f"interval anchor {self.anchor!r} is not valid; expected a datetime"
            )
        self._check_common()

    @property
    def step(self) -> dt.timedelta:
        """``every`` as a timedelta."""
        assert isinstance(self.every, dt.timedelta)
        return self.every

    @property
    def steps_in_days(self) -> bool:
        """Whether it steps in local calendar days (a whole number of days)."""
        return self.step % _DAY == dt.timedelta(0)

    def to_dict(self) -> dict[str, Any]:
        anchor = None if self.anchor is None else self.anchor.isoformat()
        return {
            "interval": self.step.total_seconds(),
            "anchor": anchor,
            "timezone": self.timezone,
        }

    def describe(self) -> str:
        text = f"every {format_interval(self.step)}"
        if self.anchor is not None:
            text += f" from {self.anchor.isoformat()}"
        return f"{text} in {self.timezone or 'UTC'}"

    def _times(self, after: dt.datetime, until: dt.datetime, limit: int) -> list[dt.datetime]:
        zone = self.zone
        if self.steps_in_days:
            anchor_wall = _wall(self.anchor, zone) if self.anchor is not None else EPOCH
            step = self.step

            def candidates(start: dt.datetime) -> Iterator[dt.datetime]:
                k = (start - anchor_wall) // step
                while True:
                    yield anchor_wall + k * step
                    k += 1

            return _collect(candidates, zone, False, after, until, limit)
        anchor = self._anchor_instant(zone)
        micros = _micros(self.step)
        k = _micros(after - anchor) // micros + 1
        times: list[dt.datetime] = []
        while len(times) < limit:
            moment = anchor + dt.timedelta(microseconds=k * micros)
            if moment > until:
                break
            times.append(moment)
            k += 1
        return times

    def _anchor_instant(self, zone: zoneinfo.ZoneInfo) -> dt.datetime:
        anchor = self.anchor if self.anchor is not None else EPOCH
        if anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=zone)
        return anchor.astimezone(UTC)


@dataclasses.dataclass(frozen=True, eq=False)
class RRule(Schedule):
    """An RFC 5545 recurrence rule: ``RRule("FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9")``.

    Read by dateutil's ``rrulestr``. Without a DTSTART line the rule starts at 2001-01-01 00:00
    local (so ``FREQ=DAILY`` is at midnight, ``FREQ=WEEKLY`` on Mondays); a DTSTART is local time
    in ``timezone`` (give the zone there, not as TZID). ``UNTIL`` ends it (local, or UTC with a
    ``Z``); ``COUNT`` needs a DTSTART, since counting from the default start would have ended
    long ago.
    """

    kind: ClassVar[str] = "rrule"
    rule: str
    timezone: str | None = None
    _: dataclasses.KW_ONLY
    active: bool = True
    parameters: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rule, str) or not self.rule.strip():
            raise ConfigurationError(
                f"rrule {self.rule!r} is not valid; expected an RFC 5545 rule such as "
                "'FREQ=WEEKLY;BYDAY=MO,WE'"
            )
        object.__setattr__(self, "rule", self.rule.strip())
        self._check_common()
        _parse_rrule(self.rule, self.timezone)

    def to_dict(self) -> dict[str, Any]:
        return {"rrule": self.rule, "timezone": self.timezone}

    def describe(self) -> str:
        return f"rrule {' '.join(self.rule.split())} in {self.timezone or 'UTC'}"

    def _times(self, after: dt.datetime, until: dt.datetime, limit: int) -> list[dt.datetime]:
        parsed = _parse_rrule(self.rule, self.timezone)
        zone = self.zone

        def candidates(start: dt.datetime) -> Iterator[dt.datetime]:
            rule = parsed.starting_near(start)
            begin = start.replace(tzinfo=zone) if parsed.aware else start
            for moment in rule.xafter(begin, inc=True):
                yield moment.replace(tzinfo=None)

        return _collect(candidates, zone, parsed.every_hour, after, until, limit)


def schedule_from_dict(data: dict[str, Any]) -> Schedule:
    """The schedule ``to_dict()`` gave (the inverse). Raises ConfigurationError on bad input."""
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"schedule {data!r} is not valid; expected a dict with 'cron', 'interval' or 'rrule'"
        )
    kinds = [key for key in ("cron", "interval", "rrule") if key in data]
    if len(kinds) != 1:
        raise ConfigurationError(
            f"schedule {data!r} is not valid; expected exactly one of 'cron', 'interval' or 'rrule'"
        )
    allowed = {
        "cron": {"cron", "timezone", "day_or"},
        "interval": {"interval", "anchor", "timezone"},
        "rrule": {"rrule", "timezone"},
    }[kinds[0]]
    extra = sorted(set(data) - allowed)
    if extra:
        raise ConfigurationError(
            f"schedule {data!r} has unknown keys {', '.join(map(repr, extra))}; expected only "
            f"{', '.join(sorted(allowed))}"
        )
    timezone = data.get("timezone")
    if kinds[0] == "cron":
        return Cron(data["cron"], timezone, day_or=data.get("day_or", True))
    if kinds[0] == "rrule":
        return RRule(data["rrule"], timezone)
    anchor = data.get("anchor")
    if anchor is not None:
        try:
            anchor = dt.datetime.fromisoformat(anchor)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"interval anchor {anchor!r} is not valid; expected an ISO 8601 time"
            ) from None
    every = data["interval"]
    if isinstance(every, str):
        every = parse_interval(every)
    return Interval(every, anchor, timezone)


_COMPACT = re.compile(
    r"^(?:(?P<w>\d+(?:\.\d+)?)w)?(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_ISO = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_interval(text: str) -> dt.timedelta:
    """A positive duration from "15m", "1h30m", "2d", "1w", "90" (seconds) or ISO 8601 "PT15M".

    Raises ConfigurationError naming the text when it is none of these, or not positive.
    """
    value = text.strip() if isinstance(text, str) else ""
    every: dt.timedelta | None = None
    match = _COMPACT.match(value.lower()) or _ISO.match(value.upper())
    try:
        if re.fullmatch(r"\d+(?:\.\d+)?", value):
            every = dt.timedelta(seconds=float(value))
        elif match is not None and value and value.upper() != "P":
            every = dt.timedelta(
                **{
                    _UNITS[key]: float(amount)
                    for key, amount in match.groupdict().items()
                    if amount
                }
            )
    except OverflowError:
        every = None
    if every is None or not every > dt.timedelta(0):
        raise ConfigurationError(
            f"interval {text!r} is not valid; expected a positive duration such as '15m', "
            "'1h30m', '2d', '90' (seconds) or 'PT15M'"
        )
    return every


def format_interval(every: dt.timedelta) -> str:
    """ "1d2h", "15m", "1m30s": the shortest of ``parse_interval``'s spellings."""
    seconds = every.total_seconds()
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


# -- time arithmetic ------------------------------------------------------------------------------


def _aware(moment: dt.datetime, name: str) -> dt.datetime:
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None:
        raise ConfigurationError(
            f"schedule time {name}={moment!r} is not valid; expected an aware datetime (with a "
            "time zone)"
        )
    return moment.astimezone(UTC)


def _wall(moment: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The local wall-clock time (naive) of ``moment`` in ``zone``; a naive one is already it."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(zone).replace(tzinfo=None)


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _instants(wall: dt.datetime, zone: zoneinfo.ZoneInfo, repeat: bool) -> tuple[dt.datetime, ...]:
    """When the local time ``wall`` happens: in a gap, shifted forward by the gap (the offset
    before the change, RFC 5545); if it happens twice, its first occurrence, and also its second
    when ``repeat`` (schedules that fire every hour keep their pace in the repeated hour)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if not repeat:
        return (first,)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if second != first and _wall(second, zone) == wall and _wall(first, zone) == wall:
        return (first, second)
    return (first,)


def _collect(
    candidates: Callable[[dt.datetime], Iterator[dt.datetime]],
    zone: zoneinfo.ZoneInfo,
    repeat: bool,
    after: dt.datetime,
    until: dt.datetime,
    limit: int,
) -> list[dt.datetime]:
    """The first ``limit`` instants in ``(after, until]`` of the schedule's local times
    (``candidates(start)``: its wall-clock times after ``start``, ascending).

    Placing local times on the time line keeps their order except near a DST change, where a
    time can move by up to an hour or two: there, candidates are read from ``_MARGIN`` before
    the range to ``_MARGIN`` past the last one needed, and the instants sorted and deduplicated
    (a 01:30 moved by the gap may equal a 02:30). Elsewhere the range's ends are exact.
    """
    found: list[dt.datetime] = []
    last_wall = _wall(until, zone) + _margin(zone, until)
    stop_at: dt.datetime | None = None
    for wall in candidates(_wall(after, zone) - _margin(zone, after)):
        if wall > last_wall or (stop_at is not None and wall > stop_at):
            break
        for moment in _instants(wall, zone, repeat):
            if after < moment <= until:
                index = bisect.bisect_left(found, moment)
                if index == len(found) or found[index] != moment:
                    found.insert(index, moment)
        if stop_at is None and len(found) >= limit:
            stop_at = _wall(found[-1], zone) + _margin(zone, found[-1])
    return found[:limit]


def _margin(zone: zoneinfo.ZoneInfo, moment: dt.datetime) -> dt.timedelta:
    """``_MARGIN`` when the zone's offset changes within it of ``moment``, else nothing."""
    before = (moment - _MARGIN).astimezone(zone).utcoffset()
    return _MARGIN if before != (moment + _MARGIN).astimezone(zone).utcoffset() else _NO_MARGIN


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=512)
def _zone(name: str | None) -> zoneinfo.ZoneInfo:
    if name is None:
        return zoneinfo.ZoneInfo("UTC")
    try:
        if not isinstance(name, str) or not name:
            raise ValueError(name)
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"time zone {name!r} is not known; expected an IANA name such as 'Europe/Lisbon', "
            "'America/New_York' or 'UTC'"
        ) from None


# -- cron ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _check_cron(expression: str, day_or: bool) -> None:
    from croniter import CroniterBadDateError, CroniterError, croniter

    if not isinstance(day_or, bool):
        raise ConfigurationError(f"cron option day_or={day_or!r} is not valid; expected a bool")
    try:
        iterator = croniter(expression, EPOCH, day_or=day_or)
    except (CroniterError, ValueError, TypeError, KeyError) as error:
        raise ConfigurationError(
            f"cron expression {expression!r} is not valid ({error}); expected five fields "
            "(minute hour day-of-month month day-of-week) such as '0 9 * * 1-5'"
        ) from None
    try:
        iterator.get_next(dt.datetime)
    except CroniterBadDateError:
        raise ConfigurationError(
            f"cron expression {expression!r} never matches a date; expected one that does, such "
            "as '0 9 * * 1-5'"
        ) from None


@dataclasses.dataclass(frozen=True)
class _DailyCron:
    """A cron expression that fires at the same times of day on every day (or on some weekdays):
    its times listed once, from croniter's reading of it, then stepped through day by day.

    croniter takes tens of microseconds per time; a scheduler loop filling 1,000 schedules with
    100 runs each asks for 100,000 of them. Expressions that restrict the day of month or the
    month (or use L, W, #) go through croniter itself.
    """

    times_of_day: tuple[dt.time, ...]
    # Cron's weekday numbers (0 = Sunday) it fires on; None: every day.
    weekdays: frozenset[int] | None

    def after(self, start: dt.datetime) -> Iterator[dt.datetime]:
        """Its wall-clock times after ``start`` (naive), ascending, forever."""
        day = start.date()
        while True:
            if self.weekdays is None or day.isoweekday() % 7 in self.weekdays:
                for time_of_day in self.times_of_day:
                    moment = dt.datetime.combine(day, time_of_day)
                    if moment > start:
                        yield moment
            day += _DAY


@functools.lru_cache(maxsize=4096)
def _cron_daily(expression: str, day_or: bool) -> _DailyCron | None:
    """The expression as a :class:`_DailyCron` when it is one, else None."""
    from croniter import croniter

    reading = croniter(expression, EPOCH, day_or=day_or)
    fields = reading.expanded
    if (
        len(fields) not in (5, 6)
        or fields[2] != ["*"]
        or fields[3] != ["*"]
        or reading.nth_weekday_of_month
        or reading.nearest_weekday
    ):
        return None

    def values(field: list[Any], size: int) -> list[int] | None:
        if field == ["*"]:
            return list(range(size))
        return list(field) if all(isinstance(value, int) for value in field) else None

    minutes, hours = values(fields[0], 60), values(fields[1], 24)
    seconds = values(fields[5], 60) if len(fields) == 6 else [0]
    weekdays = values(fields[4], 7)
    if minutes is None or hours is None or seconds is None or weekdays is None:
        return None
    if len(minutes) * len(hours) * len(seconds) > 1440:
        return None
    times = sorted(dt.time(h, m, s) for h in hours for m in minutes for s in seconds)
    days = None if fields[4] == ["*"] else frozenset(day % 7 for day in weekdays)
    return _DailyCron(tuple(times), days)


@functools.lru_cache(maxsize=4096)
def _cron_every_hour(expression: str, day_or: bool) -> bool:
    """Whether the expression fires in every hour of the day (its hour field is ``*``)."""
    from croniter import croniter

    hours = croniter(expression, EPOCH, day_or=day_or).expanded[1]
    return hours == ["*"] or len(set(hours)) == 24


# -- rrule -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ParsedRule:
    """A rule as dateutil reads it, and what computing its times needs to know."""

    rules: Any  # dateutil.rrule.rruleset
    # Whether its times are aware (in the schedule's zone): an UNTIL in UTC needs it.
    aware: bool
    # The one rrule (no RDATE, EXRULE, EXDATE, COUNT) whose start can move forward by whole
    # periods without changing its times, or None.
    movable: Any
    every_hour: bool

    def starting_near(self, moment: dt.datetime) -> Any:
        """The rule, started as late as can be before ``moment`` (naive local) with the same
        times from there on: iterating from DTSTART 2001 to now every time would be slow."""
        if self.movable is None:
            return self.rules
        rule = self.movable
        start = rule._dtstart
        moved = _move_start(start.replace(tzinfo=None), moment, rule._freq, rule._interval)
        if moved is None:
            return rule
        return rule.replace(dtstart=moved.replace(tzinfo=start.tzinfo))


@functools.lru_cache(maxsize=1024)
def _parse_rrule(text: str, timezone: str | None) -> _ParsedRule:
    from dateutil.rrule import HOURLY, rrulestr

    zone = _zone(timezone)

    def invalid(reason: str) -> ConfigurationError:
        return ConfigurationError(
            f"rrule {text!r} is not valid ({reason}); expected an RFC 5545 rule such as "
            "'FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9', with DTSTART (if any) in local time"
        )

    aware = False
    try:
        rules = rrulestr(text, dtstart=EPOCH, forceset=True)
    except ValueError as error:
        if "UNTIL" not in str(error):
            raise invalid(str(error)) from None
        # UNTIL in UTC: the rule's times must then be aware, in the schedule's zone.
        try:
            rules = rrulestr(text, dtstart=EPOCH.replace(tzinfo=zone), forceset=True)
        except ValueError as again:
            raise invalid(str(again)) from None
        aware = True
    except (TypeError, AttributeError, KeyError, OverflowError) as error:
        raise invalid(str(error) or type(error).__name__) from None
    members = list(rules._rrule)
    if not members and not rules._rdate:
        raise invalid("it has no RRULE")
    for member in members:
        start = member._dtstart
        if start.tzinfo is not None and not (aware and start.tzinfo is zone):
            raise invalid(
                "DTSTART has a time zone; give it in local time and the zone as timezone="
            )
        if member._count is not None and start.replace(tzinfo=None) == EPOCH:
            raise invalid("COUNT needs a DTSTART: from the default start it would have ended")
    single = len(members) == 1 and not (rules._rdate or rules._exrule or rules._exdate)
    movable = members[0] if single and members[0]._count is None else None
    every_hour = False
    if single:
        rule = members[0]
        hourly_or_finer = rule._freq >= HOURLY and (rule._freq != HOURLY or rule._interval == 1)
        every_hour = hourly_or_finer and (rule._byhour is None or len(rule._byhour) == 24)
    return _ParsedRule(rules, aware, movable, every_hour)


def _move_start(
    start: dt.datetime, moment: dt.datetime, freq: int, interval: int
) -> dt.datetime | None:
    """``start`` moved forward by a whole number of the rule's periods (``interval`` times its
    frequency), to at most a period before ``moment``; None when it cannot or need not move.

    The times of the rule from the moved start are the same as from the original one: whole
    periods keep the rule's alignment, and the fields dateutil fills from DTSTART (time of day,
    weekday, day of month, month) do not change.
    """
    from dateutil.rrule import DAILY, HOURLY, MINUTELY, MONTHLY, SECONDLY, WEEKLY, YEARLY

    if moment <= start:
        return None
    if freq == YEARLY:
        if (start.month, start.day) == (2, 29):
            return None
        years = (moment.year - start.year - 1) // interval * interval
        return start.replace(year=start.year + years) if years > 0 else None
    if freq == MONTHLY:
        if start.day > 28:
            return None
        months = (moment.year - start.year) * 12 + moment.month - start.month - 1
        months = months // interval * interval
        if months <= 0:
            return None
        index = start.year * 12 + start.month - 1 + months
        return start.replace(year=index // 12, month=index % 12 + 1)
    unit = {
        WEEKLY: dt.timedelta(weeks=1),
        DAILY: dt.timedelta(days=1),
        HOURLY: dt.timedelta(hours=1),
        MINUTELY: dt.timedelta(minutes=1),
        SECONDLY: dt.timedelta(seconds=1),
    }[freq]
    span = unit * interval
    periods = (moment - start) // span - 1
    return start + periods * span if periods > 0 else None


__all__ = [
    "Cron",
    "Interval",
    "RRule",
    "Schedule",
    "format_interval",
    "parse_interval",
    "schedule_from_dict",
]
