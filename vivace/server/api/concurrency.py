"""``/api/concurrency-limits``: the limits on task tags and ``vivace.concurrency`` names.

Each limit is listed with the slots its live leases hold now; one limit's page adds the leases
themselves (who holds them, since when, until when unless renewed). Creating, changing, deleting
a limit and dropping its leases (``reset``) need an admin key.

A limit's path names it as ``ls`` shows it (``tag:db`` for the tag ``db``); like the CLI, a bare
tag is found when no limit has that exact name.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vivace.exceptions import ConcurrencyLimitError
from vivace.server import auth, deps
from vivace.server.api.models import ErrorMessage, error_responses
from vivace.server.api.params import Name
from vivace.store import concurrency as store
from vivace.store.concurrency import ConcurrencyLimitRecord, LeaseRecord

router = APIRouter()

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
LimitName = Annotated[Name, Path(description="The limit's name (tag:TAG for a task tag's).")]
_NOT_FOUND = "No such concurrency limit."
_MAX_LIMIT = store.MAX_LIMIT
_EXISTS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorMessage, "description": "A limit of that name exists already."}
}


class ConcurrencyLimit(BaseModel):
    """A concurrency limit and how much of it is in use."""

    id: uuid.UUID
    name: str = Field(examples=["tag:database", "warehouse"])
    tag: str | None = Field(
        description="The task tag it limits; null for a limit of vivace.concurrency(name)."
    )
    limit: int = Field(description="Slots held at once, at most.")
    active: bool = Field(description="Enforced; an inactive limit lets everything through.")
    slots_in_use: int = Field(description="Slots held by live leases now.")
    created: dt.datetime
    updated: dt.datetime

    @classmethod
    def from_record(cls, record: ConcurrencyLimitRecord, in_use: int) -> ConcurrencyLimit:
        return cls(
            id=record.id,
            name=record.name,
            tag=record.tag,
            limit=record.limit,
            active=record.active,
            slots_in_use=in_use,
            created=record.created,
            updated=record.updated,
        )


class ConcurrencyLease(BaseModel):
    """Slots one holder has of a limit, until ``expires`` unless its process renews them."""

    id: uuid.UUID
    occupy: int = Field(description="Slots it holds.")
    holder: str = Field(
        description="host:pid, and the task or flow run it holds them for.",
        examples=["worker-1:4242 task run 0190f6f1-7c2a-7b4e-9a51-4c8f1e2d3a4b"],
    )
    acquired: dt.datetime
    expires: dt.datetime

    @classmethod
    def from_record(cls, record: LeaseRecord) -> ConcurrencyLease:
        return cls(
            id=record.id,
            occupy=record.occupy,
            holder=record.holder,
            acquired=record.acquired,
            expires=record.expires,
        )


class ConcurrencyLimitDetail(ConcurrencyLimit):
    """A limit with its live leases, oldest first."""

    leases: list[ConcurrencyLease]


class ConcurrencyLimitCreate(BaseModel):
    """A new limit: give ``tag`` for task runs tagged so, or ``name`` for vivace.concurrency."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = Field(default=None, description="For vivace.concurrency(name).")
    tag: Name | None = Field(default=None, description="For task runs with this tag.")
    limit: int = Field(ge=0, le=_MAX_LIMIT)
    active: bool = True

    @model_validator(mode="after")
    def _one_of_name_and_tag(self) -> ConcurrencyLimitCreate:
        if (self.name is None) == (self.tag is None):
            raise ValueError("expected exactly one of 'name' and 'tag'")
        return self

    def limit_name(self) -> str:
        if self.tag is not None:
            return store.tag_limit_name(self.tag)
        assert self.name is not None
        return self.name


class ConcurrencyLimitUpdate(BaseModel):
    """What to change of a limit; what is left out is kept."""

    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(default=None, ge=0, le=_MAX_LIMIT)
    active: bool | None = None


class ResetResult(BaseModel):
    name: str
    dropped: int = Field(description="Leases dropped.")


@router.get(
    "/concurrency-limits",
    response_model=list[ConcurrencyLimit],
    tags=["concurrency limits"],
    responses=error_responses(503),
)
def list_limits(database_url: DatabaseUrl) -> list[ConcurrencyLimit]:
    """Every limit, by name, with the slots in use."""
    limits = store.read_limits(database_url)
    used = store.slots_in_use(database_url, [limit.name for limit in limits])
    return [ConcurrencyLimit.from_record(limit, used[limit.name]) for limit in limits]


@router.post(
    "/concurrency-limits",
    status_code=201,
    response_model=ConcurrencyLimit,
    tags=["concurrency limits"],
    dependencies=[Depends(auth.require_admin)],
    responses={**error_responses(403, 422, 503), **_EXISTS},
)
def create_limit(database_url: DatabaseUrl, body: ConcurrencyLimitCreate) -> ConcurrencyLimit:
    """Create a limit."""
    try:
        record = store.create_limit(database_url, body.limit_name(), body.limit, active=body.active)
    except ConcurrencyLimitError as error:
        raise HTTPException(409, str(error)) from None
    return ConcurrencyLimit.from_record(record, 0)


@router.get(
    "/concurrency-limits/{name}",
    response_model=ConcurrencyLimitDetail,
    tags=["concurrency limits"],
    responses=error_responses(404, 422, 503, not_found=_NOT_FOUND),
)
def read_limit(database_url: DatabaseUrl, name: LimitName) -> ConcurrencyLimitDetail:
    """One limit, with who holds its slots now."""
    record = _limit_or_404(database_url, name)
    leases = store.read_leases(database_url, record.name)
    base = ConcurrencyLimit.from_record(record, sum(lease.occupy for lease in leases))
    return ConcurrencyLimitDetail(
        **base.model_dump(), leases=[ConcurrencyLease.from_record(lease) for lease in leases]
    )


@router.patch(
    "/concurrency-limits/{name}",
    response_model=ConcurrencyLimit,
    tags=["concurrency limits"],
    dependencies=[Depends(auth.require_admin)],
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def update_limit(
    database_url: DatabaseUrl, name: LimitName, changes: ConcurrencyLimitUpdate
) -> ConcurrencyLimit:
    """Change a limit's slots or active flag; waiters are woken at once if it grew."""
    record = _limit_or_404(database_url, name)
    updated = store.update_limit(
        database_url, record.name, limit=changes.limit, active=changes.active
    )
    used = store.slots_in_use(database_url, [updated.name])
    return ConcurrencyLimit.from_record(updated, used[updated.name])


@router.delete(
    "/concurrency-limits/{name}",
    status_code=204,
    tags=["concurrency limits"],
    dependencies=[Depends(auth.require_admin)],
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def delete_limit(database_url: DatabaseUrl, name: LimitName) -> Response:
    """Delete a limit and its leases: what it limited then runs unlimited."""
    record = _limit_or_404(database_url, name)
    store.delete_limit(database_url, record.name)
    return Response(status_code=204)


@router.post(
    "/concurrency-limits/{name}/reset",
    response_model=ResetResult,
    tags=["concurrency limits"],
    dependencies=[Depends(auth.require_admin)],
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def reset_limit(database_url: DatabaseUrl, name: LimitName) -> ResetResult:
    """Drop every lease of the limit, freeing its slots at once (holders still running go on)."""
    record = _limit_or_404(database_url, name)
    return ResetResult(name=record.name, dropped=store.reset_limit(database_url, record.name))


def _limit_or_404(database_url: str, name: str) -> ConcurrencyLimitRecord:
    record = store.find_limit(database_url, name)
    if record is None:
        raise HTTPException(404, f"concurrency limit {name!r} not found")
    return record
