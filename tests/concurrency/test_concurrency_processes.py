"""Limits across processes, on SQLite and PostgreSQL: a holder killed with SIGKILL gives its slot
back when its lease runs out (while alive, it renews it), and a waiter in another process gets the
slot promptly after a release: on PostgreSQL through LISTEN/NOTIFY, well before it would look
again by itself (it would wait 10 s: its recheck, and the holder's lease is 30 s); on SQLite by
polling, at most 0.5 s apart. The bound asserted is generous: 3 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

import vivace
from vivace.exceptions import ConcurrencySlotTimeoutError
from vivace.settings import reset_settings
from vivace.store import concurrency as store
from vivace.store import concurrency_slots

WAIT = 30  # seconds a subprocess may take to say something, at most
PROMPT = (
    3.0  # seconds from a release to the waiter's slot, at most (polls: 0.5 s; PG recheck: 10 s)
)

HOLDER = """
    import time
    import vivace

    with vivace.concurrency("warehouse"):
        print("held", flush=True)
        time.sleep(600)
"""

WAITER = """
    import time
    from vivace.settings import get_settings
    from vivace.store import concurrency_slots as slots

    url = get_settings().resolved_database_url
    slots._listening(url)  # PostgreSQL: LISTEN in place before the wait starts
    leases = slots.acquire_slots(
        url, ["warehouse"], 1, "waiter", timeout=60,
        on_wait=lambda blocked: print("waiting", flush=True),
    )
    print(f"acquired {time.time()!r}", flush=True)
    slots.release_slots(url, leases)
"""


@pytest.fixture
def spawn() -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def start(code: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT)
        if process.stdout is not None:
            process.stdout.close()


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the subprocess ended (exit code {process.wait(WAIT)}) without a word"
    return line.strip()


def test_a_killed_holder_frees_its_slot_after_the_lease(
    database_url: str, spawn: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_CONCURRENCY_LEASE_SECONDS", "1")
    reset_settings()
    store.create_limit(database_url, "warehouse", 1)
    holder = spawn(HOLDER)  # type: ignore[operator]
    assert _line(holder) == "held"
    (lease,) = store.read_leases(database_url, "warehouse")

    # Alive, the holder renews its lease: its expiry moves on, and nobody else gets in.
    deadline = time.monotonic() + WAIT
    while store.read_leases(database_url, "warehouse")[0].expires <= lease.expires:
        assert time.monotonic() < deadline, "the holder never renewed its lease"
        time.sleep(0.05)
    with pytest.raises(ConcurrencySlotTimeoutError), vivace.concurrency("warehouse", timeout=0):
        pytest.fail("got a slot its live holder holds")

    holder.send_signal(signal.SIGKILL)
    holder.wait(WAIT)

    with vivace.concurrency("warehouse", timeout=WAIT) as taken:
        assert len(taken.lease_ids) == 1
        (mine,) = store.read_leases(database_url, "warehouse")
        assert mine.holder != lease.holder


def test_a_waiter_in_another_process_is_woken_by_a_release(
    database_url: str, spawn: object
) -> None:
    store.create_limit(database_url, "warehouse", 1)
    assert concurrency_slots.LISTEN_RECHECK > 3 * PROMPT
    assert get_lease_seconds() > 3 * PROMPT

    with vivace.concurrency("warehouse"):
        waiter = spawn(WAITER)  # type: ignore[operator]
        assert _line(waiter) == "waiting"
        released_at = time.time()
    word, acquired_at = _line(waiter).split()

    assert word == "acquired"
    assert float(acquired_at) - released_at < PROMPT
    assert waiter.wait(WAIT) == 0


def get_lease_seconds() -> float:
    from vivace.settings import get_settings

    return get_settings().concurrency_lease_seconds
