"""Filesystem blocks: one contract for every writable one, then what each adds.

The contract runs on LocalFileSystem, RemoteFileSystem over ``memory://`` and ``file://``, and
S3Bucket over an in-memory stand-in registered for the ``s3`` protocol (no S3 is reachable here),
which also records the storage options the block hands to fsspec.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry as fsspec_registry
from pydantic import SecretStr, ValidationError

from vivace.blocks import (
    AzureBlobStorage,
    Block,
    FileSystemBlock,
    GCSBucket,
    GitHubRepository,
    LocalFileSystem,
    RemoteFileSystem,
    S3Bucket,
    SMBFileSystem,
)
from vivace.blocks.filesystems import is_ignored
from vivace.exceptions import (
    BlockError,
    BlockPathError,
    ConfigurationError,
    MissingExtraError,
    ReadOnlyBlockError,
)


class FakeS3(MemoryFileSystem):
    """An in-memory filesystem answering to s3://, remembering the options it was made with."""

    protocol = ("s3",)
    cachable = False
    made_with: list[dict[str, Any]] = []

    def __init__(self, **options: Any) -> None:
        FakeS3.made_with.append(options)
        super().__init__()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str) and path.startswith("s3://"):
            path = path[len("s3://") :]
        return super()._strip_protocol(path).lstrip("/")  # s3fs paths start with the bucket


@pytest.fixture
def fake_s3(monkeypatch: pytest.MonkeyPatch) -> type[FakeS3]:
    monkeypatch.setitem(fsspec_registry, "s3", FakeS3)
    monkeypatch.setattr(FakeS3, "made_with", [])
    return FakeS3


def _local(tmp_path: Path) -> FileSystemBlock:
    return LocalFileSystem(basepath=str(tmp_path / "base"))


def _memory(tmp_path: Path) -> FileSystemBlock:
    return RemoteFileSystem(basepath=f"memory://vivace-tests/{uuid.uuid4().hex}/base")


def _file_url(tmp_path: Path) -> FileSystemBlock:
    return RemoteFileSystem(basepath=f"file://{tmp_path}/base")


def _s3(tmp_path: Path) -> FileSystemBlock:
    return S3Bucket(bucket_name=f"bucket-{uuid.uuid4().hex[:8]}", basepath="team/base")


WRITABLE = [
    pytest.param(_local, id="local"),
    pytest.param(_memory, id="remote-memory"),
    pytest.param(_file_url, id="remote-file"),
    pytest.param(_s3, id="s3-stand-in"),
]


@pytest.fixture(params=WRITABLE)
def filesystem(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FileSystemBlock:
    if request.node.callspec.id.startswith("s3"):
        request.getfixturevalue("fake_s3")
    make: Callable[[Path], FileSystemBlock] = request.param
    return make(tmp_path)


def make_tree(root: Path) -> Path:
    files = {
        "flow.py": "print('hi')",
        "pkg/__init__.py": "",
        "pkg/util.py": "x = 1",
        "pkg/__pycache__/util.cpython-311.pyc": "bytecode",
        "data/raw/big.csv": "a,b",
        "data/keep.csv": "c,d",
        "notes.tmp": "scratch",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def files_under(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -- the contract -------------------------------------------------------------------------------


def test_write_then_read_creates_parent_folders(filesystem: FileSystemBlock) -> None:
    where = filesystem.write_path("reports/2024/q1.csv", b"a,b\n1,2\n")

    assert filesystem.read_path("reports/2024/q1.csv") == b"a,b\n1,2\n"
    assert where.endswith("reports/2024/q1.csv")


def test_text_content_is_written_as_utf8(filesystem: FileSystemBlock) -> None:
    filesystem.write_path("note.txt", "café")

    assert filesystem.read_path("note.txt") == "café".encode()


def test_writing_again_replaces_the_file(filesystem: FileSystemBlock) -> None:
    filesystem.write_path("f.txt", b"one")
    filesystem.write_path("f.txt", b"two")

    assert filesystem.read_path("f.txt") == b"two"


def test_reading_a_missing_file_names_it(filesystem: FileSystemBlock) -> None:
    with pytest.raises(FileNotFoundError, match=r"no file 'absent\.txt' under"):
        filesystem.read_path("absent.txt")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("../outside.txt", id="parent"),
        pytest.param("a/../../outside.txt", id="nested-parent"),
        pytest.param("..", id="just-dots"),
    ],
)
def test_paths_climbing_out_of_the_basepath_are_refused(
    filesystem: FileSystemBlock, path: str
) -> None:
    with pytest.raises(BlockPathError, match="out of"):
        filesystem.write_path(path, b"x")
    with pytest.raises(BlockPathError):
        filesystem.read_path(path)


def test_dots_that_stay_inside_are_fine(filesystem: FileSystemBlock) -> None:
    filesystem.write_path("a/b/../c.txt", b"x")

    assert filesystem.read_path("a/c.txt") == b"x"


def test_put_then_get_directory_copies_the_tree(
    filesystem: FileSystemBlock, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "source")

    put = filesystem.put_directory(source, to_path="project")
    got = filesystem.get_directory("project", tmp_path / "copy")

    assert put == got == 7
    assert files_under(tmp_path / "copy") == files_under(source)


def test_put_directory_honours_ignore_patterns(filesystem: FileSystemBlock, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "source")

    copied = filesystem.put_directory(source, ignore=["__pycache__", "*.tmp", "data/raw/"])
    filesystem.get_directory(local_path=tmp_path / "copy")

    assert copied == 4
    assert sorted(files_under(tmp_path / "copy")) == [
        "data/keep.csv",
        "flow.py",
        "pkg/__init__.py",
        "pkg/util.py",
    ]


def test_get_directory_honours_ignore_patterns(filesystem: FileSystemBlock, tmp_path: Path) -> None:
    filesystem.put_directory(make_tree(tmp_path / "source"))

    copied = filesystem.get_directory(local_path=tmp_path / "copy", ignore=["*.csv", "pkg"])

    assert copied == 2
    assert sorted(files_under(tmp_path / "copy")) == ["flow.py", "notes.tmp"]


def test_get_directory_of_a_missing_folder_says_so(
    filesystem: FileSystemBlock, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="get_directory: nothing at 'nowhere'"):
        filesystem.get_directory("nowhere", tmp_path / "copy")


def test_put_directory_of_a_missing_local_folder_says_so(
    filesystem: FileSystemBlock, tmp_path: Path
) -> None:
    with pytest.raises(NotADirectoryError, match="is not a local folder"):
        filesystem.put_directory(tmp_path / "nope")


def test_a_single_string_ignore_is_refused(filesystem: FileSystemBlock, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError, match=r"expected a list of patterns, such as \['\*.pyc'"
    ):
        filesystem.put_directory(make_tree(tmp_path / "source"), ignore="*.pyc")


def test_a_saved_filesystem_block_loads_and_works(
    filesystem: FileSystemBlock, database_url: str
) -> None:
    filesystem.write_path("hello.txt", b"hello")
    filesystem.save("storage")

    loaded = Block.load("storage")

    assert isinstance(loaded, type(filesystem))
    assert loaded.read_path("hello.txt") == b"hello"


# -- local --------------------------------------------------------------------------------------


def test_local_absolute_paths_inside_the_basepath_are_accepted(tmp_path: Path) -> None:
    block = LocalFileSystem(basepath=str(tmp_path))

    block.write_path(str(tmp_path / "a" / "b.txt"), b"x")

    assert block.read_path("a/b.txt") == b"x"
    with pytest.raises(BlockPathError, match="leads out of"):
        block.read_path("/etc/hostname")


def test_local_symlinks_leading_out_are_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside")
    base = tmp_path / "base"
    base.mkdir()
    (base / "link.txt").symlink_to(tmp_path / "secret.txt")

    with pytest.raises(BlockPathError, match="leads out of"):
        LocalFileSystem(basepath=str(base)).read_path("link.txt")


def test_local_basepath_expands_the_home_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    LocalFileSystem(basepath="~/data").write_path("x.txt", b"x")

    assert (tmp_path / "data" / "x.txt").read_bytes() == b"x"


def test_local_put_directory_into_a_folder_inside_the_source(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "project")
    block = LocalFileSystem(basepath=str(source / "snapshot"))

    first = block.put_directory(source)
    second = block.put_directory(source)  # the snapshot itself is never copied into itself

    assert first == second == 7
    assert files_under(source / "snapshot") == {
        relative: text
        for relative, text in files_under(source).items()
        if not relative.startswith("snapshot/")
    }


def test_local_basepath_must_not_be_empty() -> None:
    with pytest.raises(ValidationError, match="basepath must name a folder"):
        LocalFileSystem(basepath="  ")


# -- remote -------------------------------------------------------------------------------------


def test_remote_basepath_needs_a_protocol() -> None:
    with pytest.raises(ValidationError, match="basepath '/data' has no protocol"):
        RemoteFileSystem(basepath="/data")


def test_remote_urls_inside_the_basepath_are_accepted() -> None:
    root = f"memory://vivace-tests/{uuid.uuid4().hex}"
    block = RemoteFileSystem(basepath=root)

    block.write_path(f"{root}/inner/x.txt", b"x")

    assert block.read_path("inner/x.txt") == b"x"
    with pytest.raises(BlockPathError, match="is not under"):
        block.read_path("memory://elsewhere/x.txt")


def test_an_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="uses a protocol fsspec does not know"):
        RemoteFileSystem(basepath="nosuchproto://x").read_path("a")


def test_remote_settings_reach_fsspec_with_secrets_revealed(fake_s3: type[FakeS3]) -> None:
    block = RemoteFileSystem(
        basepath="s3://bucket/folder",
        settings={"key": "id", "secret": SecretStr("s3cret"), "client_kwargs": {"x": 1}},
    )

    block.write_path("f.txt", b"x")

    assert fake_s3.made_with[-1] == {"key": "id", "secret": "s3cret", "client_kwargs": {"x": 1}}


# -- typed cloud blocks -------------------------------------------------------------------------


def test_s3_bucket_maps_its_fields_to_s3fs_options(fake_s3: type[FakeS3]) -> None:
    block = S3Bucket(
        bucket_name="results",
        basepath="/team/",
        aws_access_key_id="AKIA",
        aws_secret_access_key="s3cret",
        aws_session_token="session",
        region_name="eu-west-1",
        endpoint_url="http://127.0.0.1:9000",
    )

    where = block.write_path("f.txt", b"x")

    assert block.url() == "s3://results/team"
    assert where == "s3://results/team/f.txt"
    assert fake_s3.made_with[-1] == {
        "key": "AKIA",
        "secret": "s3cret",
        "token": "session",
        "client_kwargs": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9000"},
    }


def test_gcs_bucket_options() -> None:
    block = GCSBucket(
        bucket="lake", basepath="raw", project="p1", service_account_info='{"type": "x"}'
    )

    assert block.url() == "gs://lake/raw"
    assert block.storage_options() == {"project": "p1", "token": {"type": "x"}}
    assert GCSBucket(bucket="lake").storage_options() == {}


def test_gcs_service_account_info_must_be_json_without_echoing_it() -> None:
    with pytest.raises(ValidationError, match="not a JSON object") as raised:
        GCSBucket(bucket="lake", service_account_info="do-not-echo-me")
    assert "do-not-echo-me" not in str(raised.value)


def test_azure_blob_storage_options() -> None:
    block = AzureBlobStorage(container="c", account_name="acct", account_key="k3y")

    assert block.url() == "az://c"
    assert block.storage_options() == {"account_name": "acct", "account_key": "k3y"}
    assert "k3y" not in repr(block)


def test_smb_filesystem_url_and_options() -> None:
    block = SMBFileSystem(
        host="fileserver", share_path="share/flows/", username="svc", password="pw"
    )

    assert block.url() == "smb://fileserver:445/share/flows"
    assert block.storage_options() == {"username": "svc", "password": "pw"}
    assert "pw'" not in repr(block) and "svc" not in repr(block)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: S3Bucket(bucket_name="s3://b"), "bucket_name 's3://b'", id="s3"),
        pytest.param(lambda: GCSBucket(bucket="a/b"), "bucket 'a/b'", id="gcs"),
        pytest.param(lambda: AzureBlobStorage(container=""), "container ''", id="azure"),
        pytest.param(lambda: SMBFileSystem(host="h", share_path="/"), "names no share", id="smb"),
    ],
)
def test_typed_blocks_check_their_fields(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make()


@pytest.mark.parametrize(
    ("block", "modules", "extra"),
    [
        pytest.param(S3Bucket(bucket_name="b"), ["s3fs"], "s3", id="s3"),
        pytest.param(GCSBucket(bucket="b"), ["gcsfs"], "gcs", id="gcs"),
        pytest.param(AzureBlobStorage(container="c"), ["adlfs"], "azure", id="azure"),
        pytest.param(
            SMBFileSystem(host="h", share_path="/s"),
            ["smbclient", "fsspec.implementations.smb"],
            "smb",
            id="smb",
        ),
        pytest.param(RemoteFileSystem(basepath="s3://b/x"), ["s3fs"], "s3", id="remote-s3"),
    ],
)
def test_a_missing_cloud_library_names_the_extra(
    block: FileSystemBlock, modules: list[str], extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in modules:  # importing it fails, whether or not it is installed
        monkeypatch.setitem(sys.modules, module, None)
    protocol = block.url().split(":")[0] if hasattr(block, "url") else "s3"
    monkeypatch.delitem(fsspec_registry, protocol, raising=False)

    with pytest.raises(MissingExtraError, match=rf"pip install 'vivace\[{extra}\]'"):
        block.read_path("x")


def test_ignore_pattern_rules() -> None:
    assert is_ignored("a/__pycache__/x.pyc", ["__pycache__"])
    assert is_ignored("x.pyc", ["*.pyc"])
    assert is_ignored("data/raw/a.csv", ["data/raw"])
    assert is_ignored("data/raw/a.csv", ["/data/raw/"])
    assert not is_ignored("other/data/raw/a.csv", ["data/raw"])
    assert not is_ignored("flow.py", ["*.pyc", "", "  "])


# -- git repositories ---------------------------------------------------------------------------


def git(*arguments: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *arguments],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class Repository:
    """A bare repository with two commits on main and a tag v1 on the first."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "flows.git"
        self.url = self.bare.as_uri()
        work = root / "work"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        git("init", "--quiet", "--initial-branch=main", str(work))
        (work / "flows").mkdir()
        (work / "flows" / "etl.py").write_text("VERSION = 1\n")
        (work / "README.md").write_text("flows\n")
        git("add", ".", cwd=work)
        git("commit", "--quiet", "-m", "first", cwd=work)
        git("tag", "v1", cwd=work)
        self.first = git("rev-parse", "HEAD", cwd=work)
        (work / "flows" / "etl.py").write_text("VERSION = 2\n")
        (work / "flows" / "scratch.tmp").write_text("tmp\n")
        git("add", ".", cwd=work)
        git("commit", "--quiet", "-m", "second", cwd=work)
        git("push", "--quiet", "--tags", self.url, "main", cwd=work)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    yield Repository(tmp_path_factory.mktemp("git"))


def test_git_repository_default_branch(repository: Repository, tmp_path: Path) -> None:
    block = GitHubRepository(repository_url=repository.url)

    copied = block.get_directory(local_path=tmp_path / "checkout")

    assert copied == 3
    assert files_under(tmp_path / "checkout") == {
        "README.md": "flows\n",
        "flows/etl.py": "VERSION = 2\n",
        "flows/scratch.tmp": "tmp\n",
    }
    assert block.read_path("flows/etl.py") == b"VERSION = 2\n"


@pytest.mark.parametrize(
    "reference", [pytest.param("v1", id="tag"), pytest.param("first-commit", id="commit-id")]
)
def test_git_repository_at_a_reference(
    repository: Repository, tmp_path: Path, reference: str
) -> None:
    ref = repository.first if reference == "first-commit" else reference
    block = GitHubRepository(repository_url=repository.url, reference=ref)

    block.get_directory("flows", tmp_path / "checkout")

    assert files_under(tmp_path / "checkout") == {"etl.py": "VERSION = 1\n"}


def test_git_repository_get_directory_honours_ignore(
    repository: Repository, tmp_path: Path
) -> None:
    block = GitHubRepository(repository_url=repository.url, reference="main")

    block.get_directory(local_path=tmp_path / "checkout", ignore=["*.tmp", "README.md"])

    assert sorted(files_under(tmp_path / "checkout")) == ["flows/etl.py"]


def test_git_repository_is_read_only(repository: Repository, tmp_path: Path) -> None:
    block = GitHubRepository(repository_url=repository.url)

    with pytest.raises(ReadOnlyBlockError, match="is read-only"):
        block.write_path("x.txt", b"x")
    with pytest.raises(ReadOnlyBlockError, match="is read-only"):
        block.put_directory(tmp_path)


def test_git_repository_refuses_paths_out_of_the_checkout(repository: Repository) -> None:
    with pytest.raises(BlockPathError):
        GitHubRepository(repository_url=repository.url).read_path("../../etc/passwd")


def test_git_failures_are_clear_and_never_show_the_token(
    repository: Repository, tmp_path: Path
) -> None:
    block = GitHubRepository(
        repository_url=repository.url, reference="no-such-branch", access_token="ghp_t0ken"
    )

    with pytest.raises(
        BlockError, match=r"cannot fetch the repository .* at 'no-such-branch'"
    ) as raised:
        block.get_directory(local_path=tmp_path / "checkout")
    assert "ghp_t0ken" not in str(raised.value)
    assert not (tmp_path / "checkout").exists()


def test_the_access_token_travels_in_git_environment_only(
    repository: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")  # the user's own config entry stays
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.quotePath")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "false")
    block = GitHubRepository(repository_url=repository.url, access_token="ghp_t0ken")

    environment = block._environment()

    assert environment["GIT_CONFIG_COUNT"] == "2"
    assert environment["GIT_CONFIG_KEY_0"] == "core.quotePath"
    assert environment["GIT_CONFIG_KEY_1"] == "http.extraHeader"
    assert environment["GIT_CONFIG_VALUE_1"].startswith("Authorization: Basic ")
    assert environment["GIT_TERMINAL_PROMPT"] == "0"
    assert "ghp_t0ken" not in repr(block)
    assert block.read_path("README.md") == b"flows\n"  # a file:// clone ignores the header


def test_git_repository_fields_are_checked() -> None:
    with pytest.raises(ValidationError, match="reference '--upload-pack=x' is not a git reference"):
        GitHubRepository(repository_url="https://github.com/o/r.git", reference="--upload-pack=x")
    with pytest.raises(ValidationError, match="is not a repository URL"):
        GitHubRepository(repository_url="--config=x")
    with pytest.raises(ValidationError, match="holds a password or token") as raised:
        GitHubRepository(repository_url="https://user:ghp_inline@github.com/o/r.git")
    assert "ghp_inline" not in str(raised.value)


def test_git_repository_saves_with_an_encrypted_token(
    repository: Repository, database_url: str, block_rows: Any
) -> None:
    GitHubRepository(repository_url=repository.url, access_token="ghp_t0ken").save("code")

    _, data = block_rows()["code"]
    loaded = GitHubRepository.load("code")

    assert "ghp_t0ken" not in data
    assert loaded.access_token is not None
    assert loaded.access_token.get_secret_value() == "ghp_t0ken"
    assert loaded.read_path("flows/etl.py") == b"VERSION = 2\n"
