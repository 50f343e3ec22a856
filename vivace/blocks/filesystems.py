"""Filesystem blocks: a place to read and write files, saved by name like any block.

Every filesystem block has the same four methods, with paths relative to its ``basepath``:

- ``read_path(path) -> bytes``
- ``write_path(path, content) -> str``: creates missing parent folders; returns where it wrote
- ``put_directory(local_path=".", to_path=None, ignore=None) -> int``: copy a local tree in
- ``get_directory(from_path=None, local_path=".", ignore=None) -> int``: copy a tree out

Both directory copies return the number of files copied and skip what an ``ignore`` pattern
matches (see ``is_ignored``); empty folders are not copied. A path that climbs out of the
basepath (``../etc``, an absolute path elsewhere, a symlink leading out of a local basepath)
raises ``BlockPathError``.

``LocalFileSystem`` and ``RemoteFileSystem`` (any fsspec URL: ``s3://``, ``memory://``,
``file://``...) live here; the typed cloud blocks in ``vivace.blocks.cloud`` and the read-only
``GitHubRepository`` in ``vivace.blocks.git``. fsspec is imported only when a block is used, and
a protocol whose package is missing raises ``MissingExtraError`` naming the extra to install.
"""

from __future__ import annotations

import os
import posixpath
import re
from abc import abstractmethod
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from vivace.blocks.core import Block
from vivace.exceptions import BlockPathError, ConfigurationError, MissingExtraError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# Which vivace extra brings the fsspec implementation of a protocol.
EXTRAS_BY_PROTOCOL = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
    "smb": "smb",
}
_PROTOCOL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


class FileSystemBlock(Block):
    """What every filesystem block does; see the module docstring for the shared behaviour."""

    @abstractmethod
    def read_path(self, path: str) -> bytes:
        """The content of the file at ``path`` (relative to the basepath)."""

    @abstractmethod
    def write_path(self, path: str, content: bytes | str) -> str:
        """Write ``content`` (text as UTF-8) to ``path``, creating parent folders; return where."""

    @abstractmethod
    def put_directory(
        self,
        local_path: str | os.PathLike[str] = ".",
        to_path: str | None = None,
        ignore: Iterable[str] | None = None,
    ) -> int:
        """Copy the files under the local folder to ``to_path`` (default: the basepath)."""

    @abstractmethod
    def get_directory(
        self,
        from_path: str | None = None,
        local_path: str | os.PathLike[str] = ".",
        ignore: Iterable[str] | None = None,
    ) -> int:
        """Copy the files under ``from_path`` (default: the basepath) into the local folder."""


class FsspecFileSystemBlock(FileSystemBlock):
    """A filesystem block over an fsspec filesystem: subclasses say which and where its root is."""

    @abstractmethod
    def _filesystem(self) -> tuple[AbstractFileSystem, str]:
        """The fsspec filesystem and the basepath in its terms (no protocol, no trailing /)."""

    def _resolve(self, fs: AbstractFileSystem, root: str, path: str | None) -> str:
        """The full path of ``path`` under ``root``; refuses one that climbs out."""
        relative = "" if path is None else str(path)
        if _PROTOCOL.match(relative):
            stripped = str(fs._strip_protocol(relative)).rstrip("/")
            if stripped != root and not stripped.startswith(root + "/"):
                raise BlockPathError(
                    f"path {relative!r} is not under {self._describe()}; expected a path "
                    "relative to the basepath or a URL inside it"
                )
            relative = stripped[len(root) :]
        normal = posixpath.normpath(relative.lstrip("/") or ".")
        if normal == ".." or normal.startswith("../"):
            raise BlockPathError(
                f"path {relative!r} climbs out of {self._describe()}; expected a path inside it"
            )
        if normal == ".":
            return root
        return f"{root}/{normal}" if root else normal

    def _location(self, fs: AbstractFileSystem, full: str) -> str:
        """How to show a full path to the user: as a URL with the protocol."""
        return str(fs.unstrip_protocol(full))

    def _describe(self) -> str:
        return f"the {type(self).__name__} block's basepath"

    def _local_folder(self, full: str) -> Path | None:
        """The local folder a full path is, when the filesystem is this machine's."""
        return None

    def read_path(self, path: str) -> bytes:
        fs, root = self._filesystem()
        full = self._resolve(fs, root, path)
        try:
            content: bytes = fs.cat_file(full)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no file {path!r} under {self._describe()} ({self._location(fs, full)})"
            ) from None
        return content

    def write_path(self, path: str, content: bytes | str) -> str:
        data = content.encode() if isinstance(content, str) else content
        if not isinstance(data, bytes | bytearray):
            raise ConfigurationError(
                f"write_path({path!r}) got content of type {type(content).__name__}; "
                "expected bytes or str"
            )
        fs, root = self._filesystem()
        full = self._resolve(fs, root, path)
        if full == root:
            raise BlockPathError(
                f"write_path needs a file path under {self._describe()}; got {path!r}"
            )
        fs.makedirs(posixpath.dirname(full), exist_ok=True)
        fs.pipe_file(full, bytes(data))
        return self._location(fs, full)

    def put_directory(
        self,
        local_path: str | os.PathLike[str] = ".",
        to_path: str | None = None,
        ignore: Iterable[str] | None = None,
    ) -> int:
        patterns = _patterns(ignore)
        source = Path(local_path).expanduser()
        if not source.is_dir():
            raise NotADirectoryError(f"put_directory: {str(source)!r} is not a local folder")
        fs, root = self._filesystem()
        target = self._resolve(fs, root, to_path)
        made: set[str] = set()
        copied = 0
        for local_file, relative in _local_files(source, patterns, skip=self._local_folder(target)):
            destination = f"{target}/{relative}" if target else relative
            parent = posixpath.dirname(destination)
            if parent not in made:
                fs.makedirs(parent, exist_ok=True)
                made.add(parent)
            fs.put_file(local_file, destination)
            copied += 1
        return copied

    def get_directory(
        self,
        from_path: str | None = None,
        local_path: str | os.PathLike[str] = ".",
        ignore: Iterable[str] | None = None,
    ) -> int:
        patterns = _patterns(ignore)
        fs, root = self._filesystem()
        source = self._resolve(fs, root, from_path)
        if fs.isfile(source):
            base, found = posixpath.dirname(source), [source]
        else:
            base, found = source, fs.find(source)
            if not found and not fs.exists(source):
                raise FileNotFoundError(
                    f"get_directory: nothing at {from_path or '.'!r} under {self._describe()} "
                    f"({self._location(fs, source)})"
                )
        destination_root = Path(local_path).expanduser()
        copied = 0
        for remote in sorted(found):
            relative = posixpath.relpath(remote, base) if base else remote
            if relative.startswith("../") or is_ignored(relative, patterns):
                continue
            destination = destination_root.joinpath(*relative.split("/"))
            destination.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(destination))
            copied += 1
        return copied


class LocalFileSystem(FsspecFileSystemBlock):
    """A folder on this machine (or a mounted share): ``LocalFileSystem(basepath="/data")``.

    ``~`` is expanded, and a relative basepath is taken from the working directory, where the
    block is used. Paths are checked after resolving symlinks, so none leads out of the folder.
    """

    basepath: str = Field(description="The folder that every path is relative to.")

    @field_validator("basepath", mode="before")
    @classmethod
    def check_basepath(cls, value: Any) -> Any:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and not value.strip():
            raise ValueError("basepath must name a folder; got an empty string")
        return value

    def _filesystem(self) -> tuple[AbstractFileSystem, str]:
        from fsspec.implementations.local import LocalFileSystem as FsspecLocal

        return FsspecLocal(), self._base().as_posix()

    def _base(self) -> Path:
        return Path(self.basepath).expanduser().resolve()

    def _resolve(self, fs: AbstractFileSystem, root: str, path: str | None) -> str:
        base = Path(root)
        candidate = Path(path or ".").expanduser()
        full = (candidate if candidate.is_absolute() else base / candidate).resolve()
        if not full.is_relative_to(base):
            raise BlockPathError(
                f"path {path!r} leads out of {self._describe()} {str(base)!r} (to {str(full)!r}); "
                "expected a path inside it"
            )
        return full.as_posix()

    def _location(self, fs: AbstractFileSystem, full: str) -> str:
        return full

    def _local_folder(self, full: str) -> Path | None:
        return Path(full)


class RemoteFileSystem(FsspecFileSystemBlock):
    """Any fsspec filesystem by URL: ``RemoteFileSystem(basepath="s3://bucket/folder")``.

    ``settings`` are the filesystem's storage options (credentials, endpoints); wrap a secret
    one in ``SecretStr`` to have it encrypted at rest: ``settings={"secret": SecretStr("...")}``.
    """

    basepath: str = Field(description="URL of the root folder, with its protocol.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Storage options passed to the fsspec filesystem."
    )

    @field_validator("basepath")
    @classmethod
    def check_basepath(cls, value: str) -> str:
        if not _PROTOCOL.search(value):
            raise ValueError(
                f"basepath {value!r} has no protocol; expected a URL such as "
                "'s3://bucket/folder', 'memory://folder' or 'file:///data' (for a local folder "
                "use LocalFileSystem)"
            )
        return value

    def _filesystem(self) -> tuple[AbstractFileSystem, str]:
        return open_filesystem(self.basepath, reveal_secrets(self.settings))


def open_filesystem(url: str, options: dict[str, Any]) -> tuple[AbstractFileSystem, str]:
    """fsspec's filesystem for ``url`` and the path in its terms; a missing package is named."""
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(url, **options)
    except ImportError as error:
        raise missing_extra(url, error) from None
    except ValueError as error:
        if "Protocol not known" not in str(error):
            raise
        raise ConfigurationError(
            f"basepath {url!r} uses a protocol fsspec does not know ({error}); expected one of "
            "fsspec's protocols, such as s3, gs, az, smb, memory or file"
        ) from None
    return fs, str(path).rstrip("/")


def missing_extra(url: str, error: ImportError) -> MissingExtraError:
    """The error for a URL whose fsspec implementation is not installed, naming the extra."""
    protocols = [match.group(1).lower() for match in _PROTOCOL.finditer(url)]
    protocols += [part.lower() for part in url.split("::")[:-1]]
    for protocol in protocols:
        extra = EXTRAS_BY_PROTOCOL.get(protocol)
        if extra is not None:
            return MissingExtraError(
                f"{protocol}:// paths need the optional extra {extra!r}, which is not installed: "
                f"pip install 'vivace[{extra}]' ({error})"
            )
    return MissingExtraError(f"{url!r} needs a package that is not installed: {error}")


def reveal_secrets(value: Any) -> Any:
    """``value`` with every ``SecretStr``/``SecretBytes`` in it replaced by its plain value."""
    reveal = getattr(value, "get_secret_value", None)
    if callable(reveal):
        return reveal()
    if isinstance(value, dict):
        return {name: reveal_secrets(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(reveal_secrets(item) for item in value)
    return value


def is_ignored(relative: str, patterns: Iterable[str]) -> bool:
    """Whether the relative POSIX path matches an ignore pattern.

    A pattern without ``/`` (``*.pyc``, ``__pycache__``, ``.git``) matches any file or folder of
    that name at any depth, with everything inside such a folder. A pattern with ``/``
    (``data/raw``, ``build/*.o``) matches from the top of the copied tree. A trailing ``/`` is
    ignored. Matching is ``fnmatch``-style and case-sensitive.
    """
    parts = relative.split("/")
    for raw in patterns:
        pattern = raw.strip().rstrip("/")
        if not pattern:
            continue
        if "/" in pattern:
            anchored = pattern.lstrip("/")
            if any(
                fnmatchcase("/".join(parts[:end]), anchored) for end in range(1, len(parts) + 1)
            ):
                return True
        elif any(fnmatchcase(part, pattern) for part in parts):
            return True
    return False


def _patterns(ignore: Iterable[str] | None) -> list[str]:
    if ignore is None:
        return []
    if isinstance(ignore, str):
        raise ConfigurationError(
            f"ignore={ignore!r} is a single string; expected a list of patterns, "
            f"such as [{ignore!r}]"
        )
    return list(ignore)


def _local_files(source: Path, patterns: list[str], *, skip: Path | None) -> list[tuple[str, str]]:
    """(path, relative POSIX path) of every file to copy under ``source``, listed up front.

    Listing before copying, and never entering ``skip`` (the target, when a local folder is put
    into a folder inside itself), keeps the copy from copying its own output.
    """
    skip = None if skip is None else skip.resolve()
    found: list[tuple[str, str]] = []
    for folder, subfolders, files in os.walk(source):
        relative_folder = Path(folder).relative_to(source).as_posix()
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not is_ignored(_join(relative_folder, name), patterns)
            and (skip is None or Path(folder, name).resolve() != skip)
        )
        for name in sorted(files):
            relative = _join(relative_folder, name)
            if not is_ignored(relative, patterns):
                found.append((os.path.join(folder, name), relative))
    return found


def _join(folder: str, name: str) -> str:
    return name if folder in ("", ".") else f"{folder}/{name}"
