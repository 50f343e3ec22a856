"""Query parameters shared by the API's routes, declared once so every route checks them alike.

The declarations carry their bounds and allowed values into /api/openapi.json, and FastAPI
answers 422 naming the parameter when a request breaks them (``vivace.server.errors`` words the
message). Text parameters refuse the NUL character, which PostgreSQL cannot store or compare.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Literal

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, Field

from vivace.engine.states import StateType
from vivace.exceptions import ConfigurationError
from vivace.store.queries import MAX_LIMIT

_LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MAX_LEVEL = 2**31 - 1  # levels are stored as 32-bit integers

RunSort = Literal[
    "start_time_desc",
    "start_time_asc",
    "end_time_desc",
    "created_desc",
    "created_asc",
    "name_asc",
    "name_desc",
]
"""The orders of flow-run and task-run lists (the store's ``RUN_SORTS``; a test pins them)."""


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("holds a NUL character; expected text without one")
    return value


Text = Annotated[str, Field(max_length=1000), AfterValidator(_without_nul)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_without_nul)]
"""A name as the store keeps it (of a deployment, a work queue, a run, a tag)."""

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT}.")]
Cursor = Annotated[
    Text | None,
    Query(description="The next_cursor of the previous page (same filters and sort)."),
]
NameLike = Annotated[
    Text | None, Query(description="Only those whose name contains this text (any case).")
]
StateFilter = Annotated[
    list[StateType] | None,
    Query(alias="state", description="Only runs in one of these state types (repeatable)."),
]
Level = Annotated[
    Text | None,
    Query(
        description=(
            "Only lines at this level or above: a name (DEBUG, INFO, WARNING, ERROR, CRITICAL; "
            "any case) or a number."
        ),
        examples=["WARNING"],
    ),
]
Time = Annotated[AwareDatetime | None, Query(description="ISO 8601 with a timezone.")]


def log_level(value: str | None) -> int | None:
    """The number of a ``level`` parameter: a level name in any case, or a whole number."""
    if value is None:
        return None
    text = value.strip()
    if text.upper() in _LEVEL_NAMES:
        number: int = logging.getLevelName(text.upper())
        return number
    if text.isascii() and text.isdigit() and int(text) <= _MAX_LEVEL:
        return int(text)
    raise ConfigurationError(
        f"level {value!r} is not a log level; expected a number from 0 to {_MAX_LEVEL} or one of "
        f"{', '.join(_LEVEL_NAMES)} (any case)"
    )


def checked_time(value: dt.datetime | None) -> dt.datetime | None:
    """``value`` unchanged, once sure the database can compare it (no overflow near year 1)."""
    if value is None:
        return None
    try:
        value.astimezone(dt.UTC)
    except OverflowError:
        raise ConfigurationError(
            f"time {value.isoformat()!r} is out of range; expected a time between the years "
            "1 and 9999 in UTC"
        ) from None
    return value
