"""``Block``: a pydantic model saved by name in the database, with its secrets encrypted at rest.

A block is configuration that flows load by name instead of carrying it in code: credentials,
a bucket, a repository. Subclass ``Block``, declare fields, save an instance once, load it
anywhere that reaches the same database::

    class Warehouse(Block):
        host: str
        password: SecretStr

    Warehouse(host="db.internal", password="s3cret").save("warehouse")
    Warehouse.load("warehouse").password.get_secret_value()  # "s3cret"

What is stored is the class's import path (``"module:QualName"``) and the field values as JSON,
with every ``SecretStr``/``SecretBytes`` encrypted (see ``vivace.blocks.encryption``). ``load`` on
a subclass checks the stored type is that class or one of its subclasses; ``Block.load`` rebuilds
whatever type was stored, importing it by its path. Classes defined in this process are found
even when they cannot be imported (a class inside a function, a script's ``__main__``); another
process needs the class at module level in an importable module.
"""

from __future__ import annotations

import importlib
import logging
import re
import uuid
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from pydantic_core import to_jsonable_python

from vivace.exceptions import BlockNotFoundError, BlockTypeError, ConfigurationError

logger = logging.getLogger("vivace.blocks")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_defined: dict[str, type[Block]] = {}  # "module:QualName" -> every Block subclass defined here


class Block(BaseModel):
    """Configuration saved by name in vivace's database; secret fields are encrypted at rest.

    Fields typed ``SecretStr`` (also inside nested models, dicts and lists) never appear in plain
    text in the database, in ``repr``, in ``model_dump_json`` or in the CLI.
    """

    # Validation errors never quote the input: it may be a credential.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    block_type_path: ClassVar[str] = "vivace.blocks.core:Block"

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.block_type_path = f"{cls.__module__}:{cls.__qualname__}"
        _defined[cls.block_type_path] = cls

    def save(self, name: str, overwrite: bool = False) -> uuid.UUID:
        """Store this block under ``name`` in one transaction; return the row's id.

        A taken name raises ``BlockExistsError`` unless ``overwrite=True``, which replaces the
        stored block (whatever its type) and keeps its id.
        """
        from vivace.blocks import store
        from vivace.blocks.encryption import encrypt_secrets, load_encryption_key

        _check_name(name)
        if type(self) is Block:
            raise BlockTypeError(
                "Block itself has no fields to save; expected an instance of a Block subclass"
            )
        dumped = self.model_dump(mode="python")
        if _holds_secret(self):
            dumped = encrypt_secrets(dumped, load_encryption_key())
        data = to_jsonable_python(dumped)
        block_id = store.write_block(
            _database_url(), name, self.block_type_path, data, overwrite=overwrite
        )
        logger.debug("Saved block %r of type %s", name, self.block_type_path)
        return block_id

    @classmethod
    def load(cls, name: str) -> Self:
        """The block saved under ``name``, rebuilt as the stored type.

        Raises ``BlockNotFoundError`` for an unknown name, ``BlockTypeError`` when the stored type
        cannot be imported or is not ``cls`` (or a subclass), ``SecretDecryptionError`` when its
        secrets were encrypted with another key.
        """
        from vivace.blocks import store

        _check_name(name)
        record = store.read_block(_database_url(), name)
        if record is None:
            raise BlockNotFoundError(f"no block named {name!r} is saved; see `vivace block ls`")
        block_class = cls._stored_class(name, record.block_type)
        return block_class._from_stored(name, record.data)

    @classmethod
    def delete(cls, name: str) -> None:
        """Delete the block saved under ``name`` (of this type, when called on a subclass)."""
        from vivace.blocks import store

        _check_name(name)
        url = _database_url()
        record = store.read_block(url, name)
        if record is not None and cls is not Block:
            cls._stored_class(name, record.block_type)
        if record is None or not store.delete_block(url, name, block_type=record.block_type):
            raise BlockNotFoundError(f"no block named {name!r} is saved; see `vivace block ls`")
        logger.debug("Deleted block %r", name)

    @classmethod
    def _stored_class(cls, name: str, block_type: str) -> type[Self]:
        found = resolve_block_type(block_type, block_name=name)
        if not issubclass(found, cls):
            raise BlockTypeError(
                f"block {name!r} is a {found.__name__} ({block_type}), not a {cls.__name__}; "
                f"load it with {found.__name__}.load({name!r}) or Block.load({name!r})"
            )
        return found

    @classmethod
    def _from_stored(cls, name: str, data: dict[str, Any]) -> Self:
        from vivace.blocks.encryption import decrypt_secrets, load_encryption_key

        if _stored_secrets(data):
            data = decrypt_secrets(data, load_encryption_key(), name)
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise BlockTypeError(
                f"block {name!r} was saved with fields that {cls.__name__} no longer accepts "
                f"({_describe(error)}); expected data matching {cls.block_type_path}: save the "
                "block again"
            ) from None


class Secret(Block):
    """One secret value, e.g. an API token: ``Secret(value="...").save("token")``."""

    value: SecretStr

    def get(self) -> str:
        """The secret in plain text."""
        return self.value.get_secret_value()


def resolve_block_type(block_type: str, *, block_name: str) -> type[Block]:
    """The Block subclass at ``"module:QualName"``: one defined in this process, or imported."""
    found = _defined.get(block_type)
    if found is not None:
        return found
    module_name, _, qualname = block_type.partition(":")
    problem: str | None = None
    value: Any = None
    try:
        value = importlib.import_module(module_name)
        for part in qualname.split("."):
            value = getattr(value, part)
    except Exception as error:  # import errors of any kind: the user's module may raise anything
        problem = f"{type(error).__name__}: {error}"
    if problem is None and not (isinstance(value, type) and issubclass(value, Block)):
        problem = f"it is a {type(value).__name__}, not a Block subclass"
    if problem is not None:
        raise BlockTypeError(
            f"block {block_name!r} has type {block_type!r}, which cannot be imported ({problem}); "
            "expected a Block subclass defined at module level in an importable module"
        )
    return value  # type: ignore[no-any-return]


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"block name {name!r} is not valid; expected 1 to 255 letters, digits, '-', '_' or "
            "'.', starting with a letter or digit"
        )


def _database_url() -> str:
    from vivace.settings import get_settings

    return get_settings().resolved_database_url


def _holds_secret(value: Any) -> bool:
    """Whether a secret sits anywhere in the model (so the key is read only when needed)."""
    if callable(getattr(value, "get_secret_value", None)):
        return True
    if isinstance(value, BaseModel):
        return any(_holds_secret(getattr(value, field)) for field in type(value).model_fields)
    if isinstance(value, dict):
        return any(_holds_secret(item) for item in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_secret(item) for item in value)
    return False


def _stored_secrets(data: Any) -> bool:
    if isinstance(data, dict):
        if len(data) == 1 and next(iter(data)).startswith("__vivace_secret_"):
            return True
        return any(_stored_secrets(item) for item in data.values())
    if isinstance(data, list):
        return any(_stored_secrets(item) for item in data)
    return False


def _describe(error: ValidationError) -> str:
    # Field locations and messages only: never the input values, which could be secrets.
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
        for item in error.errors()
    )
