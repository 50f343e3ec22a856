"""Reading a page's query string, with a clear 400 page for every value the UI cannot use.

Pages read ``request.query_params`` through :class:`PageQuery` rather than declaring typed
parameters: FastAPI would answer a bad value with a JSON 422, and a person clicking through the UI
should get a page that names the field and what it expects. Empty values (an untouched form
field) count as absent.
"""

from __future__ import annotations

import datetime as dt
import logging

from starlette.datastructures import QueryParams

from vivace.engine.states import StateType
from vivace.server.ui.routing import PageError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_LEVEL = 2**31 - 1  # levels are stored as 32-bit integers
_STATE_NAMES = ", ".join(member.value for member in StateType)


class PageQuery:
    """Typed reads of one request's query parameters."""

    def __init__(self, query: QueryParams) -> None:
        self._query = query

    def _get(self, name: str) -> str | None:
        value = self._query.get(name)
        if value is None or not value.strip():
            return None
        if "\x00" in value:  # PostgreSQL can neither store nor compare it
            raise PageError(400, f"{name} holds a NUL character; expected text without one")
        return value.strip()

    def text(self, name: str, *, max_length: int = 255) -> str | None:
        """A free text value, such as part of a run name."""
        value = self._get(name)
        if value is not None and len(value) > max_length:
            raise PageError(
                400, f"{name} is {len(value)} characters long; expected at most {max_length}"
            )
        return value

    def states(self, name: str = "state") -> list[StateType] | None:
        """Every ``name=`` value as a state type (``state=failed&state=CRASHED``)."""
        values = [value.strip() for value in self._query.getlist(name) if value.strip()]
        if not values:
            return None
        states = []
        for value in values:
            try:
                states.append(StateType(value.upper()))
            except ValueError:
                raise PageError(
                    400, f"{name} {value!r} is not a state type; expected one of {_STATE_NAMES}"
                ) from None
        return list(dict.fromkeys(states))

    def time(self, name: str) -> dt.datetime | None:
        """An ISO 8601 time; without a timezone (a browser's datetime-local field) it is UTC."""
        value = self._get(name)
        if value is None:
            return None
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise PageError(
                400,
                f"{name} {value!r} is not a time; expected ISO 8601 such as 2024-05-01T12:00 "
                "(UTC unless it names a timezone)",
            ) from None
        when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when
        try:
            when.astimezone(dt.UTC)  # the database compares in UTC: no overflow near year 1
        except OverflowError:
            raise PageError(
                400,
                f"{name} {value!r} is out of range; expected a time between the years 1 and 9999 "
                "in UTC",
            ) from None
        return when

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        """One of ``choices``."""
        value = self._get(name)
        if value is None:
            return default
        if value not in choices:
            raise PageError(400, f"{name} {value!r} is not one of {', '.join(choices)}")
        return value

    def level(self, name: str = "level") -> int | None:
        """A log level: a name (``warning``) or a number (``30``)."""
        value = self._get(name)
        if value is None:
            return None
        # ASCII digits only ("²" is a digit int() refuses), few enough for int() to take.
        if value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= MAX_LEVEL:
            return int(value)
        if value.upper() in LEVELS:
            number: int = logging.getLevelName(value.upper())
            return number
        raise PageError(
            400,
            f"{name} {value!r} is not a log level; expected a number from 0 to {MAX_LEVEL} or one "
            f"of {', '.join(LEVELS)}",
        )

    def cursor(self, name: str = "cursor") -> str | None:
        """A page cursor, as the previous page's "next" link gave it (the store checks it)."""
        return self.text(name, max_length=1000)
