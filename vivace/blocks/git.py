"""``GitHubRepository``: read-only access to a git repository's files at a branch, tag or commit.

It fetches the repository with the ``git`` command (a shallow clone: ``git clone --depth 1
--branch REF``; a full 40-character commit id is fetched by ``git fetch --depth 1 URL SHA``
instead, which GitHub allows) into a temporary folder, and serves files from there. Any URL git
understands works, not only GitHub's: ``https://``, ``ssh://``, ``file://``.

``commit_id()`` says which commit the reference names now, and ``at_commit(id)`` is the same
repository pinned to it: a deployment records the commit at deploy time, so its runs read that
commit's files whatever the branch holds later.

An ``access_token`` (a GitHub personal access token or app token) is handed to git through the
``GIT_CONFIG_*`` environment of the child process as an HTTP ``Authorization`` header, never in
the URL or the command line, so it shows in neither ``ps`` nor git's messages. git never prompts
for credentials (``GIT_TERMINAL_PROMPT=0``): a private repository without a token fails at once.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from vivace.blocks.filesystems import FileSystemBlock, LocalFileSystem
from vivace.exceptions import BlockError, ReadOnlyBlockError

_COMMIT_ID = re.compile(r"[0-9a-fA-F]{40}")
_MASK = "**********"


class GitHubRepository(FileSystemBlock):
    """A git repository's files at ``reference`` (default: the default branch), read-only.

    ``GitHubRepository(repository_url="https://github.com/org/flows.git", reference="v1.2")``;
    ``get_directory(local_path="flows")`` copies the files (without ``.git``) into ``flows/``.
    Every call fetches the repository afresh: to read many files, copy them once with
    ``get_directory`` rather than calling ``read_path`` for each.
    """

    repository_url: str = Field(description="URL to clone, e.g. https://github.com/org/repo.git")
    reference: str | None = Field(
        default=None, description="Branch, tag or full commit id; default: the default branch."
    )
    access_token: SecretStr | None = Field(
        default=None, description="Token for a private repository over HTTPS."
    )

    @field_validator("repository_url")
    @classmethod
    def check_repository_url(cls, value: str) -> str:
        if not value.strip() or value.startswith("-"):
            raise ValueError(
                f"repository_url {value!r} is not a repository URL; expected e.g. "
                "'https://github.com/org/repo.git'"
            )
        if urlsplit(value.strip()).password:  # the message never quotes the URL: it has a secret
            raise ValueError(
                "repository_url holds a password or token, which would be stored in plain text; "
                "expected the URL without it, and the token in access_token (encrypted at rest)"
            )
        return value.strip()

    @field_validator("reference")
    @classmethod
    def check_reference(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value.startswith("-") or " " in value):
            raise ValueError(
                f"reference {value!r} is not a git reference; expected a branch, a tag or a "
                "40-character commit id"
            )
        return value

    def read_path(self, path: str) -> bytes:
        with self._checkout() as folder:
            return LocalFileSystem(basepath=str(folder)).read_path(path)

    def write_path(self, path: str, content: bytes | str) -> str:
        raise ReadOnlyBlockError(
            f"cannot write {path!r}: GitHubRepository {self.repository_url} is read-only; "
            "expected a writable filesystem block (LocalFileSystem, RemoteFileSystem, S3Bucket...)"
        )

    def put_directory(
        self,
        local_path: str | os.PathLike[str] = ".",
        to_path: str | None = None,
        ignore: Iterable[str] | None = None,
    ) -> int:
        raise ReadOnlyBlockError(
            f"cannot put {str(local_path)!r}: GitHubRepository {self.repository_url} is "
            "read-only; expected a writable filesystem block (push to the repository with git)"
        )

    def get_directory(
        self,
        from_path: str | None = None,
        local_path: str | os.PathLike[str] = ".",
        ignore: Iterable[str] | None = None,
    ) -> int:
        """Copy the repository's files (or those under ``from_path``), never ``.git``."""
        with self._checkout() as folder:
            checkout = LocalFileSystem(basepath=str(folder))
            return checkout.get_directory(from_path, local_path, [".git", *(ignore or ())])

    def commit_id(self) -> str:
        """The full id of the commit ``reference`` names now (the default branch's head when
        None); a commit id names itself, without a fetch."""
        if self.reference is not None and _COMMIT_ID.fullmatch(self.reference):
            return self.reference.lower()
        with self._checkout() as folder:
            return self._git("-C", str(folder), "rev-parse", "HEAD").strip()

    def at_commit(self, commit: str) -> GitHubRepository:
        """This repository read at ``commit`` (a full 40-character id, as ``commit_id`` gives)."""
        if not _COMMIT_ID.fullmatch(commit):
            raise BlockError(
                f"commit {commit!r} of {self.repository_url} is not a full commit id; expected "
                "40 hexadecimal characters"
            )
        return self.model_copy(update={"reference": commit})

    @contextmanager
    def _checkout(self) -> Iterator[Path]:
        """The repository at ``reference`` in a temporary folder, removed afterwards."""
        folder = Path(tempfile.mkdtemp(prefix="vivace-git-"))
        try:
            checkout = folder / "repository"
            if self.reference is not None and _COMMIT_ID.fullmatch(self.reference):
                self._git("init", "--quiet", str(checkout))
                self._git(
                    "-C", str(checkout), "fetch", "--quiet", "--depth", "1", "--",
                    self.repository_url, self.reference,
                )  # fmt: skip
                self._git("-C", str(checkout), "checkout", "--quiet", "FETCH_HEAD")
            else:
                branch = [] if self.reference is None else ["--branch", self.reference]
                self._git(
                    "clone", "--quiet", "--depth", "1", *branch, "--",
                    self.repository_url, str(checkout),
                )  # fmt: skip
            yield checkout
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _git(self, *arguments: str) -> str:
        """Run git with ``arguments``; its output. BlockError with git's message on failure."""
        executable = shutil.which("git")
        if executable is None:
            raise BlockError(
                "GitHubRepository needs the git command, which is not on PATH; expected git "
                "to be installed (e.g. apt-get install git)"
            )
        result = subprocess.run(
            [executable, *arguments],
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            at = "its default branch" if self.reference is None else repr(self.reference)
            raise BlockError(
                f"cannot fetch the repository {self.repository_url} at {at}: "
                f"{self._scrub(result.stderr).strip() or f'git exited with {result.returncode}'}"
            )
        return result.stdout

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment["GIT_TERMINAL_PROMPT"] = "0"
        if self.access_token is not None:
            credentials = f"x-access-token:{self.access_token.get_secret_value()}"
            header = "Authorization: Basic " + base64.b64encode(credentials.encode()).decode()
            count = environment.get("GIT_CONFIG_COUNT", "")
            index = int(count) if count.isdigit() else 0  # after the user's own GIT_CONFIG_*
            environment["GIT_CONFIG_COUNT"] = str(index + 1)
            environment[f"GIT_CONFIG_KEY_{index}"] = "http.extraHeader"
            environment[f"GIT_CONFIG_VALUE_{index}"] = header
        return environment

    def _scrub(self, text: str) -> str:
        if self.access_token is not None and self.access_token.get_secret_value():
            text = text.replace(self.access_token.get_secret_value(), _MASK)
        return text
