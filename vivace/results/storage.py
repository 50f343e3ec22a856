"""Result storage: where persisted results live, named so that any process can find them again.

The database records a result's ``location`` (the storage), ``key`` (its name there) and
serializer, never its bytes. :func:`storage_from_location` rebuilds the storage from the location
in another process, on a cluster worker, or in a later Python run:

- a local folder: ``/abs/path`` (the default, ``VIVACE_LOCAL_STORAGE_PATH``, is
  ``$VIVACE_HOME/storage``). Only processes on the same machine (or sharing the mount) see it: a
  cluster whose workers run elsewhere needs one of the others.
- an fsspec URL: ``s3://bucket/prefix``, ``gcs://``, ``az://``, ``memory://``, ``file://`` (the
  cloud ones need their fsspec package: s3fs, gcsfs, adlfs).
- a saved filesystem block: ``block:NAME`` (``vivace.blocks``: anything with ``read_path`` and
  ``write_path``), loaded by name where it is read.

Writes are atomic where the backend allows (local: a temporary file renamed into place), so a
reader never sees half a result.
"""

from __future__ import annotations

import abc
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from vivace.exceptions import ConfigurationError, ResultError

BLOCK_PREFIX = "block:"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ResultStorage(abc.ABC):
    """Somewhere results can be written under a key and read back, from any process."""

    location: str

    @abc.abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there."""

    @abc.abstractmethod
    def read(self, key: str) -> bytes:
        """The bytes stored under ``key``; raises FileNotFoundError if there are none."""

    def exists(self, key: str) -> bool | None:
        """Whether something is stored under ``key``, if a cheap check can tell (a stat, a HEAD
        request); None when it cannot, and only reading it would."""
        return None

    @property
    def is_local(self) -> bool:
        """Whether only this machine can read it (a cluster elsewhere cannot)."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResultStorage) and other.location == self.location

    def __hash__(self) -> int:
        return hash(self.location)


class LocalResultStorage(ResultStorage):
    """A folder on this machine; created on the first write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self.location = str(self.path)

    @property
    def is_local(self) -> bool:
        return True

    def write(self, key: str, data: bytes) -> None:
        target = self.path / _checked_key(key)
        self.path.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(data)
            os.replace(partial, target)  # atomic: readers see the old result or the new one
        except BaseException:
            partial.unlink(missing_ok=True)  # a full disk must not also fill up with leftovers
            raise

    def read(self, key: str) -> bytes:
        return (self.path / _checked_key(key)).read_bytes()

    def exists(self, key: str) -> bool:
        return (self.path / _checked_key(key)).is_file()


class FsspecResultStorage(ResultStorage):
    """Any fsspec filesystem, by URL: ``s3://bucket/prefix``, ``memory://results``, ..."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.location = self.url
        self._fs: Any = None
        self._root = ""
        self._lock = threading.Lock()

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            with self._lock:
                if self._fs is None:
                    import fsspec

                    try:
                        fs, root = fsspec.core.url_to_fs(self.url)
                    except (ImportError, ValueError) as error:
                        raise ResultError(
                            f"result storage {self.url!r} cannot be used: {error}"
                        ) from None
                    self._root = root.rstrip("/")
                    self._fs = fs
        return self._fs, self._root

    def write(self, key: str, data: bytes) -> None:
        fs, root = self._filesystem()
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(f"{root}/{_checked_key(key)}", data)

    def read(self, key: str) -> bytes:
        fs, root = self._filesystem()
        return bytes(fs.cat_file(f"{root}/{_checked_key(key)}"))

    def exists(self, key: str) -> bool:
        fs, root = self._filesystem()
        return bool(fs.exists(f"{root}/{_checked_key(key)}"))

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url}  # a filesystem object need not pickle; workers make their own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"])  # type: ignore[misc]


class BlockResultStorage(ResultStorage):
    """A filesystem block (``read_path``/``write_path``), saved under a name or given as is.

    A block given as an object without a saved name can be written and read by this process
    (and by cluster workers, which get a copy of it), but a later process cannot find it again:
    save the block and pass ``result_storage="block:NAME"``.
    """

    def __init__(self, name: str | None = None, block: Any = None) -> None:
        if name is None and block is None:
            raise ConfigurationError("BlockResultStorage needs a block name or a block")
        self.name = name
        self._block = block
        if name is not None:
            self.location = BLOCK_PREFIX + name
        else:
            kind = type(block)
            self.location = f"{BLOCK_PREFIX}?{kind.__module__}.{kind.__qualname__}"

    @property
    def block(self) -> Any:
        if self._block is None:
            assert self.name is not None
            try:
                from vivace.blocks import Block
            except ImportError as error:  # pragma: no cover - blocks ship with vivace
                raise ResultError(f"result storage {self.location!r} needs vivace.blocks: {error}")
            self._block = Block.load(self.name)
        return self._block

    def write(self, key: str, data: bytes) -> None:
        self.block.write_path(_checked_key(key), data)

    def read(self, key: str) -> bytes:
        if self.name is None and self._block is None:  # pragma: no cover - guarded by __init__
            raise ResultError(f"{self.location!r} names no saved block")
        return bytes(self.block.read_path(_checked_key(key)))


def resolve_storage(value: Any, what: str = "result_storage") -> ResultStorage:
    """The storage for an option value: a path, an fsspec URL, ``"block:NAME"``, a filesystem
    block, or a :class:`ResultStorage`. Raises ConfigurationError naming ``what`` otherwise."""
    if isinstance(value, ResultStorage):
        return value
    if isinstance(value, os.PathLike):
        return LocalResultStorage(value)
    if isinstance(value, str) and value.strip():
        return storage_from_location(value)
    if callable(getattr(value, "read_path", None)) and callable(getattr(value, "write_path", None)):
        name = _saved_block_name(value)
        return BlockResultStorage(name, value)
    raise ConfigurationError(
        f"{what} must be a folder path, an fsspec URL such as 's3://bucket/prefix', "
        f"'block:NAME' (a saved filesystem block), or a filesystem block; got {value!r}"
    )


def storage_from_location(location: str) -> ResultStorage:
    """Rebuild a storage from the location the database recorded."""
    if location.startswith(BLOCK_PREFIX):
        name = location[len(BLOCK_PREFIX) :]
        if not name or name.startswith("?"):
            raise ResultError(
                f"result storage {location!r} was a filesystem block without a saved name, so "
                "it cannot be found from here; save the block and use result_storage='block:NAME'"
            )
        return BlockResultStorage(name)
    if location.startswith("file://"):
        return LocalResultStorage(location[len("file://") :])
    if _URL.match(location):
        return FsspecResultStorage(location)
    return LocalResultStorage(location)


def default_storage() -> ResultStorage:
    """The storage for results whose task names none: the local folder in the settings."""
    from vivace.settings import get_settings

    return LocalResultStorage(get_settings().resolved_local_storage_path)


def is_remote_address(address: Any) -> bool:
    """Whether a runner's cluster address may point at other machines (not this one)."""
    if not isinstance(address, str) or not address:
        return False
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname
    if address == "auto" or host is None:
        return True
    return host not in {"127.0.0.1", "localhost", "::1", "0.0.0.0", socket.gethostname()}


_warned_local: set[tuple[Any, str]] = set()


def warn_if_local(task: Any, scope: Any) -> None:
    """Warn once per flow run and task when a task persists to this machine's disk but runs on
    a cluster that may be elsewhere: its results would land on each worker's own disk."""
    results = task.results
    if not (results.always or scope.persist_by_default):
        return
    storage = results.storage or default_storage()
    key = (scope.flow_run.id, task.task_key)
    if not storage.is_local or key in _warned_local:
        return
    if len(_warned_local) > 10_000:
        _warned_local.clear()
    _warned_local.add(key)
    import logging

    logging.getLogger("vivace.task_runs").warning(
        "task %r persists its results to the local folder %s, but runs on a cluster whose "
        "workers may be other machines: each would write to its own disk, where a resume or a "
        "cache hit elsewhere cannot read them. Use a shared result_storage (an fsspec URL such "
        "as s3://bucket/prefix, or 'block:NAME').",
        task.name,
        storage.location,
    )


def _saved_block_name(block: Any) -> str | None:
    """The name a block was saved or loaded under, if the block knows it."""
    for attribute in ("_block_name", "block_name", "_name", "saved_name"):
        name = getattr(block, attribute, None)
        if isinstance(name, str) and name:
            return name
    return None


_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def _checked_key(key: str) -> str:
    """A result key is a plain file name: never a path that could leave the storage."""
    if not _KEY.match(key):
        raise ResultError(
            f"result key {key!r} is not a plain name (letters, digits, '.', '_', '-'; at most "
            "255 characters)"
        )
    return key
