"""Secret fields: encrypted at rest, never shown, decrypted only with the key that wrote them."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretBytes, SecretStr

from vivace.blocks import Block, RemoteFileSystem, S3Bucket, Secret, encryption
from vivace.exceptions import ConfigurationError, SecretDecryptionError
from vivace.settings import reset_settings

PLAIN = "pl41n-s3cret-value"


class Credentials(BaseModel):
    user: str
    password: SecretStr


class Service(Block):
    """Secrets in every place a block can hold them."""

    url: str
    token: SecretStr
    credentials: Credentials
    headers: dict[str, SecretStr] = {}
    extra: dict[str, Any] = {}
    fallbacks: list[SecretStr] = []
    certificate: SecretBytes | None = None


def make_service() -> Service:
    return Service(
        url="https://api.example.com",
        token=PLAIN + "-token",
        credentials=Credentials(user="etl", password=PLAIN + "-password"),
        headers={"X-Api-Key": PLAIN + "-header"},
        extra={"secret": SecretStr(PLAIN + "-extra"), "retries": 3},
        fallbacks=[SecretStr(PLAIN + "-fallback")],
        certificate=SecretBytes((PLAIN + "-cert").encode()),
    )


def use_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("VIVACE_ENCRYPTION_KEY", key)
    reset_settings()


def test_secrets_are_not_stored_in_plain_text(database_url: str, block_rows: Any) -> None:
    make_service().save("service")

    _, data = block_rows()["service"]

    assert PLAIN not in data
    assert "https://api.example.com" in data  # plain fields stay readable
    assert data.count("__vivace_secret_str__") == 5
    assert data.count("__vivace_secret_bytes__") == 1


def test_every_nested_secret_comes_back_decrypted(database_url: str) -> None:
    make_service().save("service")

    loaded = Service.load("service")

    assert loaded.token.get_secret_value() == PLAIN + "-token"
    assert loaded.credentials.password.get_secret_value() == PLAIN + "-password"
    assert loaded.headers["X-Api-Key"].get_secret_value() == PLAIN + "-header"
    assert isinstance(loaded.extra["secret"], SecretStr)
    assert loaded.extra["secret"].get_secret_value() == PLAIN + "-extra"
    assert loaded.extra["retries"] == 3
    assert loaded.fallbacks[0].get_secret_value() == PLAIN + "-fallback"
    assert loaded.certificate is not None
    assert loaded.certificate.get_secret_value() == (PLAIN + "-cert").encode()
    assert loaded == make_service()


def test_secrets_never_show_in_repr_str_or_json() -> None:
    service = make_service()

    for shown in (repr(service), str(service), service.model_dump_json()):
        assert PLAIN not in shown
        assert "**********" in shown


def test_secrets_never_reach_the_logs(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # vivace's own logger stops propagating to the root once a flow has run in this process
    # (run_logging's console handler), so caplog's root handler alone could miss its records.
    vivace_logger = logging.getLogger("vivace")
    level = vivace_logger.level
    vivace_logger.addHandler(caplog.handler)
    vivace_logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            make_service().save("service")
            Block.load("service")
            Block.delete("service")
    finally:
        vivace_logger.removeHandler(caplog.handler)
        vivace_logger.setLevel(level)

    assert "Saved block 'service'" in caplog.text
    assert PLAIN not in caplog.text


def test_secret_get_returns_the_value(database_url: str) -> None:
    Secret(value=PLAIN).save("token")

    assert Secret.load("token").get() == PLAIN


def test_remote_settings_wrapped_in_secretstr_are_encrypted(
    database_url: str, block_rows: Any
) -> None:
    RemoteFileSystem(
        basepath="memory://bucket", settings={"key": "visible-id", "secret": SecretStr(PLAIN)}
    ).save("remote")

    _, data = block_rows()["remote"]
    loaded = RemoteFileSystem.load("remote")

    assert PLAIN not in data and "visible-id" in data
    assert loaded.settings["secret"].get_secret_value() == PLAIN


def test_cloud_credentials_are_encrypted(database_url: str, block_rows: Any) -> None:
    S3Bucket(
        bucket_name="results", aws_access_key_id=PLAIN + "-id", aws_secret_access_key=PLAIN
    ).save("s3")

    _, data = block_rows()["s3"]

    assert PLAIN not in data
    assert S3Bucket.load("s3").storage_options() == {"key": PLAIN + "-id", "secret": PLAIN}


def test_a_block_saved_with_another_key_cannot_be_decrypted(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_key(monkeypatch, encryption.generate_key())
    Secret(value=PLAIN).save("token")
    use_key(monkeypatch, encryption.generate_key())

    with pytest.raises(
        SecretDecryptionError,
        match=r"cannot decrypt the secret fields of block 'token': they were encrypted with a "
        r"different encryption key than the one in use \(VIVACE_ENCRYPTION_KEY\)",
    ) as raised:
        Secret.load("token")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_the_env_key_and_the_key_file_are_different_keys(
    database_url: str, monkeypatch: pytest.MonkeyPatch, vivace_home: Path
) -> None:
    Secret(value=PLAIN).save("token")  # generates the key file
    use_key(monkeypatch, encryption.generate_key())

    with pytest.raises(SecretDecryptionError, match="different encryption key"):
        Secret.load("token")

    monkeypatch.delenv("VIVACE_ENCRYPTION_KEY")
    reset_settings()
    assert Secret.load("token").get() == PLAIN


def test_a_malformed_env_key_names_the_variable(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_key(monkeypatch, "not-a-fernet-key")

    with pytest.raises(ConfigurationError, match="VIVACE_ENCRYPTION_KEY is not a Fernet key"):
        Secret(value=PLAIN).save("token")


def test_blocks_without_secrets_need_no_key(database_url: str, vivace_home: Path) -> None:
    RemoteFileSystem(basepath="memory://x").save("plain")
    RemoteFileSystem.load("plain")

    assert not (vivace_home / encryption.KEY_FILE_NAME).exists()


# -- the key file -------------------------------------------------------------------------------


def test_the_key_file_is_created_once_with_mode_0600(vivace_home: Path) -> None:
    previous = os.umask(0)  # even a permissive umask must not widen the file's mode
    try:
        first = encryption.load_encryption_key()
    finally:
        os.umask(previous)
    key_file = vivace_home / encryption.KEY_FILE_NAME

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.source == f"the key file {key_file}"
    token = first.fernet.encrypt(b"x")
    assert encryption.load_encryption_key().fernet.decrypt(token) == b"x"
    assert [path.name for path in vivace_home.iterdir()] == [encryption.KEY_FILE_NAME]


def test_a_process_that_loses_the_race_uses_the_winners_key(
    vivace_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    winner = Fernet.generate_key()
    real_link = os.link

    def another_process_links_first(source: Any, destination: Any) -> None:
        Path(destination).write_bytes(winner)  # the other process's key lands first
        real_link(source, destination)

    monkeypatch.setattr(encryption.os, "link", another_process_links_first)

    key = encryption.load_encryption_key()

    assert (vivace_home / encryption.KEY_FILE_NAME).read_bytes() == winner
    assert Fernet(winner).decrypt(key.fernet.encrypt(b"x")) == b"x"
    assert [path.name for path in vivace_home.iterdir()] == [encryption.KEY_FILE_NAME]


def test_processes_starting_together_agree_on_one_key(vivace_home: Path) -> None:
    code = (
        "from vivace.blocks import encryption; "
        "print(encryption.load_encryption_key().fernet.encrypt(b'agreed').decode())"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    tokens = [process.communicate(timeout=60)[0].strip() for process in processes]

    key = encryption.load_encryption_key()
    assert all(process.returncode == 0 for process in processes)
    assert [key.fernet.decrypt(token.encode()) for token in tokens] == [b"agreed"] * 4


def test_a_corrupt_key_file_is_a_clear_error(vivace_home: Path) -> None:
    vivace_home.mkdir(parents=True)
    (vivace_home / encryption.KEY_FILE_NAME).write_text("garbage")

    with pytest.raises(ConfigurationError, match=r"the key file .*encryption.key' is not a Fernet"):
        encryption.load_encryption_key()


def test_an_unwritable_home_is_a_clear_error(
    vivace_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = vivace_home.parent / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("VIVACE_HOME", str(blocker / "home"))
    reset_settings()

    with pytest.raises(ConfigurationError, match="cannot create the encryption key file"):
        encryption.load_encryption_key()


def test_mask_secrets_hides_stored_markers() -> None:
    key = encryption.EncryptionKey(
        fernet=__import__("cryptography.fernet").fernet.Fernet(encryption.generate_key()),
        source="test",
    )
    stored = encryption.encrypt_secrets({"a": SecretStr(PLAIN), "b": [1, {"c": "d"}]}, key)

    assert encryption.mask_secrets(stored) == {"a": "**********", "b": [1, {"c": "d"}]}
    assert encryption.decrypt_secrets(stored, key, "x")["a"].get_secret_value() == PLAIN
