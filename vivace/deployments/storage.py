"""Where a deployment's code lives: upload a project folder once, fetch it for every run.

A storage is given as one of:

- ``None``: ``VIVACE_DEPLOYMENT_STORAGE``, else the folder ``$VIVACE_HOME/deployments``;
- a local folder path, or an fsspec URL (``s3://bucket/flows``, ``gs://...``, ``az://...``,
  ``smb://...``, ``memory://...``);
- ``"block:NAME"`` or a saved filesystem block's name through ``Block.load`` (LocalFileSystem,
  RemoteFileSystem, S3Bucket, ...). A read-only ``GitHubRepository`` block is a source, not a
  destination: nothing is uploaded; the commit the block's reference names at deploy time is
  recorded, and each run fetches the repository at that commit, so a branch that moves on does
  not change what an earlier version runs.

Each upload goes to a folder of its own (``<deployment name>/<upload id>``), so a redeploy never
changes the code an earlier version's runs fetch. What the database keeps (``DeploymentRecord
.storage``) is ``{"url": "<folder URL>"}``, ``{"block": "<name>", "path": "<folder in it>"}``
or, for a repository, ``{"block": "<name>", "path": "", "commit": "<40-hex commit id>"}``.

The project folder's ``.vivaceignore`` (one gitignore-style pattern a line, ``#`` comments) says
what not to upload, on top of ``DEFAULT_IGNORE`` (which keeps out ``.git``, virtual
environments, caches and ``.env`` files of secrets).

A storage URL may carry credentials (``smb://user:password@host/share``,
``s3://key:secret@bucket``): everything shown (``describe_storage``, the API, the UI, the CLI,
error messages that end in a run's state message) goes through :func:`redact_credentials`, which
hides the password. Likewise the values of a deployment's infrastructure ``env`` are shown as
``**********`` (:func:`shown_infrastructure`): only the variables' names are shown.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from vivace._ids import uuid7
from vivace.exceptions import ConfigurationError, DeploymentError
from vivace.results.storage import BLOCK_PREFIX

IGNORE_FILE = ".vivaceignore"
DEFAULT_IGNORE = (
    ".git",
    "__pycache__",
    "*.pyc",
    ".venv",
    ".mypy_cache",
    ".pytest_cache",
    ".env",
)
MASK = "**********"
# scheme://user:password@ — the password is what goes; a user alone (an access key id) stays.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*):(?P<password>[^@\s]*)@"
)


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
    project: str | os.PathLike[str],
    storage: str | None,
    deployment_name: str,
    *,
    commit: str | None = None,
) -> dict[str, Any]:
    """Copy the project folder's files (less the ignored ones) to ``storage``; return the
    storage record that :func:`fetch_project` reads.

    A read-only GitHubRepository block uploads nothing: the repository is the code, and the
    record pins the commit its reference names now (``commit``, when the caller resolved it
    already), so every run of this version fetches that commit.
    """
    from vivace.blocks.git import GitHubRepository

    folder = Path(project).expanduser().resolve()
    if not folder.is_dir():
        raise DeploymentError(f"project folder {str(folder)!r} is not a folder")
    target = storage if storage is not None else default_storage()
    upload_id = uuid7().hex
    sub_path = f"{_safe(deployment_name)}/{upload_id}"
    ignore = ignore_patterns(folder)
    if target.startswith(BLOCK_PREFIX):
        name = target[len(BLOCK_PREFIX) :].strip()
        block = _load_filesystem_block(name)
        if isinstance(block, GitHubRepository):
            return {"block": name, "path": "", "commit": commit or block.commit_id()}
        record: dict[str, Any] = {"block": name, "path": sub_path}
        copied = block.put_directory(folder, sub_path, ignore)
    else:
        url = f"{target.rstrip('/')}/{sub_path}"
        record = {"url": url}
        copied = _url_filesystem(url).put_directory(folder, None, ignore)
    if copied == 0:
        raise DeploymentError(
            f"nothing to upload from {str(folder)!r}: every file is ignored ({IGNORE_FILE})"
        )
    return record


def remove_upload(storage: dict[str, Any]) -> None:
    """Remove what ``upload_project`` uploaded for ``storage`` (a deploy that failed after it),
    at best: a failure to remove is ignored, the deploy's own error is the one that matters.
    A repository's record names nothing uploaded, and is left alone."""
    from vivace.blocks.filesystems import FsspecFileSystemBlock

    if "url" not in storage and not storage.get("path"):
        return  # a repository: nothing was uploaded
    with contextlib.suppress(Exception):
        path: str | None = None
        if "url" in storage:
            filesystem = _url_filesystem(str(storage["url"]))
        else:
            filesystem, path = _load_filesystem_block(str(storage["block"])), str(storage["path"])
        if isinstance(filesystem, FsspecFileSystemBlock):
            fs, root = filesystem._filesystem()
            fs.rm(filesystem._resolve(fs, root, path), recursive=True)


def fetch_project(storage: dict[str, Any], destination: str | os.PathLike[str]) -> int:
    """Copy a deployment's code from its storage record into ``destination``; return how many
    files were copied. Raises DeploymentError naming the storage when it cannot be read."""
    from vivace.blocks.git import GitHubRepository

    if "url" not in storage and "block" not in storage:
        raise DeploymentError(
            f"storage record {describe_storage(storage)!r} names neither a url nor a block"
        )
    try:
        if "url" in storage:
            copied = _url_filesystem(str(storage["url"])).get_directory(None, destination)
        else:
            block = _load_filesystem_block(str(storage["block"]))
            if storage.get("commit"):
                if not isinstance(block, GitHubRepository):
                    raise ConfigurationError(
                        f"block {storage['block']!r} is now a {type(block).__name__}; the "
                        "deployment was made from it as a GitHubRepository (at a commit)"
                    )
                block = block.at_commit(str(storage["commit"]))
            copied = block.get_directory(storage.get("path") or None, destination)
    except Exception as error:
        raise DeploymentError(
            f"the deployment's code cannot be fetched from {describe_storage(storage)}: "
            f"{type(error).__name__}: {redact_credentials(str(error))}"
        ) from error
    return int(copied)


def describe_storage(storage: dict[str, Any]) -> str:
    """One line for listings: the URL (its password hidden), or ``block NAME (path)``, or
    ``block NAME at commit 1a2b3c4d5e6f`` for a repository."""
    if "url" in storage:
        return redact_credentials(str(storage["url"]))
    if "block" not in storage:
        return redact_credentials(str(storage))
    described = f"block {storage['block']}"
    if storage.get("path"):
        described += f" ({storage['path']})"
    if storage.get("commit"):
        described += f" at commit {str(storage['commit'])[:12]}"
    return described


def shown_storage(storage: dict[str, Any]) -> dict[str, Any]:
    """The storage record as the API shows it: a URL's password hidden."""
    if "url" not in storage:
        return dict(storage)
    return {**storage, "url": redact_credentials(str(storage["url"]))}


def shown_infrastructure(infrastructure: dict[str, Any]) -> dict[str, Any]:
    """An infrastructure record as the API, the UI and the CLI show it: the names of its
    ``env`` variables, each value shown as ``**********`` (they often hold secrets)."""
    env = infrastructure.get("env")
    if not isinstance(env, dict) or not env:
        return dict(infrastructure)
    return {**infrastructure, "env": dict.fromkeys(env, MASK)}


def redact_credentials(text: str) -> str:
    """``text`` with the password of each URL in it replaced by ``**********``:
    ``smb://me:secret@host/share`` becomes ``smb://me:**********@host/share``."""
    return _URL_PASSWORD.sub(lambda found: f"{found['head']}:{MASK}@", text)


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
