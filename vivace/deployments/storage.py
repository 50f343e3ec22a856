"""Where a deployment's code lives: upload a project folder once, fetch it for every run.

A storage is given as one of:

- ``None``: ``VIVACE_DEPLOYMENT_STORAGE``, else the folder ``$VIVACE_HOME/deployments``;
- a local folder path, or an fsspec URL (``s3://bucket/flows``, ``gs://...``, ``az://...``,
  ``smb://...``, ``memory://...``);
- ``"block:NAME"`` or a saved filesystem block's name through ``Block.load`` (LocalFileSystem,
  RemoteFileSystem, S3Bucket, ...). A read-only ``GitHubRepository`` block is a source, not a
  destination: nothing is uploaded, and each run fetches the repository at the block's reference.

Each upload goes to a folder of its own (``<deployment name>/<upload id>``), so a redeploy never
changes the code an earlier version's runs fetch. What the database keeps (``DeploymentRecord
.storage``) is ``{"url": "<folder URL>"}`` or ``{"block": "<name>", "path": "<folder in it>"}``.

The project folder's ``.vivaceignore`` (one gitignore-style pattern a line, ``#`` comments) says
what not to upload, on top of ``DEFAULT_IGNORE``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vivace._ids import uuid7
from vivace.exceptions import ConfigurationError, DeploymentError

IGNORE_FILE = ".vivaceignore"
DEFAULT_IGNORE = (".git", "__pycache__", "*.pyc", ".venv", ".mypy_cache", ".pytest_cache")
_BLOCK_PREFIX = "block:"


def ignore_patterns(project: Path) -> list[str]:
    """The patterns not to upload: ``DEFAULT_IGNORE`` and the project's ``.vivaceignore``."""
    patterns = list(DEFAULT_IGNORE)
    ignore_file = project / IGNORE_FILE
    if ignore_file.is_file():
        for line in ignore_file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.rstrip("/"))
    return patterns


def upload_project(
    project: str | os.PathLike[str], storage: str | None, deployment_name: str
) -> dict[str, Any]:
    """Copy the project folder's files (less the ignored ones) to ``storage``; return the
    storage record that :func:`fetch_project` reads. A read-only GitHubRepository block uploads
    nothing and records the block (the repository is the code)."""
    from vivace.blocks.git import GitHubRepository

    folder = Path(project).expanduser().resolve()
    if not folder.is_dir():
        raise DeploymentError(f"project folder {str(folder)!r} is not a folder")
    target = storage if storage is not None else default_storage()
    upload_id = uuid7().hex
    sub_path = f"{_safe(deployment_name)}/{upload_id}"
    ignore = ignore_patterns(folder)
    if target.startswith(_BLOCK_PREFIX):
        name = target[len(_BLOCK_PREFIX) :].strip()
        block = _load_filesystem_block(name)
        if isinstance(block, GitHubRepository):
            return {"block": name, "path": ""}
        copied = block.put_directory(folder, sub_path, ignore)
        record: dict[str, Any] = {"block": name, "path": sub_path}
    else:
        url = f"{target.rstrip('/')}/{sub_path}"
        copied = _url_filesystem(url).put_directory(folder, None, ignore)
        record = {"url": url}
    if copied == 0:
        raise DeploymentError(
            f"nothing to upload from {str(folder)!r}: every file is ignored ({IGNORE_FILE})"
        )
    return record


def fetch_project(storage: dict[str, Any], destination: str | os.PathLike[str]) -> int:
    """Copy a deployment's code from its storage record into ``destination``; return how many
    files were copied. Raises DeploymentError naming the storage when it cannot be read."""
    if "url" not in storage and "block" not in storage:
        raise DeploymentError(f"storage record {storage!r} names neither a url nor a block")
    try:
        if "url" in storage:
            copied = _url_filesystem(str(storage["url"])).get_directory(None, destination)
        else:
            block = _load_filesystem_block(str(storage["block"]))
            copied = block.get_directory(storage.get("path") or None, destination)
    except Exception as error:
        raise DeploymentError(
            f"the deployment's code cannot be fetched from {describe_storage(storage)}: "
            f"{type(error).__name__}: {error}"
        ) from error
    return int(copied)


def describe_storage(storage: dict[str, Any]) -> str:
    """One line for listings: the URL, or ``block NAME/path``."""
    if "url" in storage:
        return str(storage["url"])
    path = storage.get("path") or ""
    return f"block {storage.get('block')}" + (f" ({path})" if path else "")


def default_storage() -> str:
    """``VIVACE_DEPLOYMENT_STORAGE``, or the folder ``$VIVACE_HOME/deployments``."""
    from vivace.settings import get_settings

    settings = get_settings()
    return settings.deployment_storage or str((settings.home / "deployments").absolute())


def _url_filesystem(url: str) -> Any:
    from vivace.blocks.filesystems import LocalFileSystem, RemoteFileSystem

    if "://" in url and not url.startswith("file://"):
        return RemoteFileSystem(basepath=url)
    path = url[len("file://") :] if url.startswith("file://") else url
    folder = Path(path).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return LocalFileSystem(basepath=str(folder))


def _load_filesystem_block(name: str) -> Any:
    from vivace.blocks.core import Block
    from vivace.blocks.filesystems import FileSystemBlock

    if not name:
        raise ConfigurationError("storage 'block:' names no block; expected block:NAME")
    block = Block.load(name)
    if not isinstance(block, FileSystemBlock):
        raise ConfigurationError(
            f"block {name!r} is a {type(block).__name__}, not a filesystem block; expected "
            "LocalFileSystem, RemoteFileSystem, S3Bucket, GCSBucket, AzureBlobStorage, "
            "SMBFileSystem or GitHubRepository"
        )
    return block


def _safe(name: str) -> str:
    """A deployment name as one path segment."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "_"
