"""The write journal: batches the database could not take, kept on disk until it can.

One folder per database URL under ``$VIVACE_HOME/journal``. Each batch is one file, written to a
``.partial`` name, fsynced, then renamed, so a crash mid-write never leaves half a batch to replay.
Replay is idempotent (run rows are upserts keyed by state order; everything else is
insert-or-ignore), so a batch replayed twice is counted once.

Rows that the database refuses even after repair (never because it was unreachable) are set
aside in ``rejected/`` with the reason, so one bad row can never block every later write.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vivace.store.statements import Batch

BATCH_SUFFIX = ".batch"


class Journal:
    """The journal folder of one database URL."""

    def __init__(self, home: Path, url: str) -> None:
        self.url = url
        self.folder = home / hashlib.sha256(url.encode()).hexdigest()[:16]

    def append(self, batch: Batch) -> int:
        """Keep ``batch`` on disk; return how many rows it holds."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{threading.get_ident()}"
        partial = self.folder / f"{name}.partial"
        with open(partial, "wb") as file:
            pickle.dump({"url": self.url, "batch": batch}, file)
            file.flush()
            os.fsync(file.fileno())
        partial.rename(self.folder / f"{name}{BATCH_SUFFIX}")
        return sum(len(rows) for _, rows in batch)

    def replay(self, write: Callable[[Batch], None]) -> int:
        """Write the kept batches, oldest first, deleting each once written; return the rows.

        A process claims a file by renaming it first, so two writers starting at once do not
        both replay it; a claim whose process died is taken over. If ``write`` raises, the file
        is given back and the error goes on.
        """
        if not self.folder.is_dir():
            return 0
        claim_suffix = f".replaying-{os.getpid()}"
        candidates = sorted(self.folder.glob(f"*{BATCH_SUFFIX}"))
        candidates += sorted(p for p in self.folder.glob("*.replaying-*") if _orphaned(p))
        replayed = 0
        for path in candidates:
            claimed = path.with_name(path.name.split(".", 1)[0] + claim_suffix)
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue  # another writer claimed it first
            try:
                with open(claimed, "rb") as file:
                    batch: Batch = pickle.load(file)["batch"]
                write(batch)
            except BaseException:
                claimed.rename(path.with_name(path.name.split(".", 1)[0] + BATCH_SUFFIX))
                raise
            claimed.unlink()
            replayed += sum(len(rows) for _, rows in batch)
        return replayed

    def reject(self, rejected: list[tuple[str, tuple[Any, ...], str]]) -> Path:
        """Set aside rows the database refuses, with the reason for each."""
        folder = self.folder / "rejected"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.time_ns():020d}-{os.getpid()}.rejected"
        with open(path, "wb") as file:
            pickle.dump({"url": self.url, "rows": rejected}, file)
        return path


def _orphaned(path: Path) -> bool:
    """A ``.replaying-<pid>`` file whose process is gone."""
    try:
        pid = int(path.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
