"""Encryption at rest of blocks' secret fields, and the key that does it.

A block's field values are stored as JSON. Every ``SecretStr`` and ``SecretBytes`` in them,
wherever it sits (a field, a nested model, a dict or list value), is replaced by a one-key object
holding a Fernet token (AES-128-CBC with an HMAC-SHA256, from ``cryptography``)::

    {"api_key": {"__vivace_secret_str__": "gAAAAABm..."}, "region": "eu-west-1"}

The marker says what to rebuild on load, so a ``dict[str, Any]`` keeps its secrets secret without
a schema to say where they are. The plain value is never written, logged or shown.

The key is ``VIVACE_ENCRYPTION_KEY`` when set; otherwise a key generated on first use into
``$VIVACE_HOME/encryption.key`` (mode 0600). Two processes starting at once agree on one key: each
writes its candidate to a private temporary file and hard-links it to the final name, which only
the first link wins (the others read the winner's key), so no process ever reads a half-written
key file. ``cryptography`` is imported only here, and only when a key is needed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretBytes, SecretStr

from vivace.exceptions import ConfigurationError, SecretDecryptionError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

KEY_FILE_NAME = "encryption.key"
MASK = "**********"
"""What a secret looks like wherever it is shown (CLI, API, repr)."""

_SECRET_STR = "__vivace_secret_str__"
_SECRET_BYTES = "__vivace_secret_bytes__"
_MARKERS = (_SECRET_STR, _SECRET_BYTES)


@dataclass(frozen=True)
class EncryptionKey:
    """The Fernet cipher in force and where its key came from (for error messages)."""

    fernet: Fernet
    source: str


def load_encryption_key() -> EncryptionKey:
    """The key in force: ``VIVACE_ENCRYPTION_KEY``, else the key file (generated if missing)."""
    from vivace.settings import get_settings, secret_value

    settings = get_settings()
    encryption_key = secret_value(settings.encryption_key)
    if encryption_key:
        return EncryptionKey(
            _fernet(encryption_key.strip().encode(), "VIVACE_ENCRYPTION_KEY"),
            "VIVACE_ENCRYPTION_KEY",
        )
    path = settings.home / KEY_FILE_NAME
    key = _read_or_create_key_file(path)
    return EncryptionKey(_fernet(key, f"the key file {str(path)!r}"), f"the key file {path}")


def encrypt_secrets(data: Any, key: EncryptionKey) -> Any:
    """``data`` (a model dump in python mode) with every secret replaced by its encrypted marker."""

    def encrypt(value: Any) -> Any:
        if isinstance(value, SecretStr):
            token = key.fernet.encrypt(value.get_secret_value().encode())
            return {_SECRET_STR: token.decode()}
        if isinstance(value, SecretBytes):
            return {_SECRET_BYTES: key.fernet.encrypt(value.get_secret_value()).decode()}
        raise ConfigurationError(
            f"a block field holds a secret of type {type(value).__name__}, which blocks cannot "
            "store; expected SecretStr or SecretBytes"
        )

    return _replace_secrets(data, is_secret=_is_pydantic_secret, replace=encrypt)


def decrypt_secrets(data: Any, key: EncryptionKey, block_name: str) -> Any:
    """Stored ``data`` with every encrypted marker turned back into a ``SecretStr``/``SecretBytes``.

    A token the key cannot open raises ``SecretDecryptionError`` naming the block and the key in
    use: the usual cause is a block saved with another ``VIVACE_ENCRYPTION_KEY`` or key file.
    """
    from cryptography.fernet import InvalidToken

    def decrypt(marker: dict[str, str]) -> Any:
        ((kind, token),) = marker.items()
        try:
            plain = key.fernet.decrypt(token.encode())
        except (InvalidToken, ValueError, TypeError):
            raise SecretDecryptionError(
                f"cannot decrypt the secret fields of block {block_name!r}: they were encrypted "
                f"with a different encryption key than the one in use ({key.source}); set "
                "VIVACE_ENCRYPTION_KEY to the key that saved the block, or save the block again"
            ) from None
        return SecretStr(plain.decode()) if kind == _SECRET_STR else SecretBytes(plain)

    return _replace_secrets(data, is_secret=_is_marker, replace=decrypt)


def mask_secrets(data: Any) -> Any:
    """Stored ``data`` with every encrypted marker shown as ``**********`` (for the CLI and API)."""
    return _replace_secrets(data, is_secret=_is_marker, replace=lambda _marker: MASK)


def generate_key() -> str:
    """A new Fernet key (32 random bytes, URL-safe base64), fit for ``VIVACE_ENCRYPTION_KEY``."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


# -- walking values -----------------------------------------------------------------------------


def _replace_secrets(
    value: Any, *, is_secret: Callable[[Any], bool], replace: Callable[[Any], Any]
) -> Any:
    if is_secret(value):
        return replace(value)
    if isinstance(value, dict):
        return {
            name: _replace_secrets(item, is_secret=is_secret, replace=replace)
            for name, item in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_replace_secrets(item, is_secret=is_secret, replace=replace) for item in value]
    return value


def _is_pydantic_secret(value: Any) -> bool:
    # SecretStr, SecretBytes and pydantic.Secret[T] all have get_secret_value.
    return callable(getattr(value, "get_secret_value", None)) and not isinstance(value, type)


def _is_marker(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)) in _MARKERS
        and isinstance(next(iter(value.values())), str)
    )


# -- the key ------------------------------------------------------------------------------------


def _fernet(key: bytes, source: str) -> Fernet:
    from cryptography.fernet import Fernet

    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"{source} is not a Fernet key; expected 32 bytes in URL-safe base64 (44 characters), "
            "such as one made by `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`"
        ) from None


def _read_or_create_key_file(path: Path) -> bytes:
    """The key in ``path``, created atomically (mode 0600) by the first process that needs it."""
    try:
        return _read_key_file(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # creating it will say what is wrong with the folder, if anything
    from cryptography.fernet import Fernet

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(descriptor, 0o600)  # exact, whatever the umask
            os.write(descriptor, Fernet.generate_key())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            os.link(candidate, path)  # fails if another process linked its key first
        except FileExistsError:
            pass
        finally:
            os.unlink(candidate)
    except OSError as error:
        raise ConfigurationError(
            f"cannot create the encryption key file {str(path)!r}: {error}; set VIVACE_HOME to "
            "a writable folder or VIVACE_ENCRYPTION_KEY to a Fernet key"
        ) from error
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as error:
        raise ConfigurationError(
            f"cannot read the encryption key file {str(path)!r}: {error}; expected a file that "
            "this user can read, or VIVACE_ENCRYPTION_KEY set to a Fernet key"
        ) from error
