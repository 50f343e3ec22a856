"""``vivace block``: the blocks saved in the database.

    vivace block ls [--type TYPE]
    vivace block inspect NAME
    vivace block delete NAME [--yes]

These read the stored rows directly: listing and inspecting need neither the block's class nor
the encryption key, and secret fields always show as ``**********``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from vivace.cli import _console, _database_url, _Failure, _table, _text, _time, cli


@cli.group("block")
def block() -> None:
    """Blocks: configuration, secrets and filesystems saved by name."""


@block.command("ls")
@click.option(
    "--type",
    "block_type",
    metavar="TYPE",
    help="Only blocks of this type: a class name (S3Bucket) or a full 'module:Class'.",
)
def block_ls(block_type: str | None) -> None:
    """List the saved blocks by name."""
    from vivace.blocks.store import list_blocks

    records = [
        record
        for record in list_blocks(_database_url())
        if block_type is None or block_type in (record.type_name, record.block_type)
    ]
    if not records:
        click.echo("No blocks saved." if block_type is None else f"No {block_type} blocks saved.")
        return
    table = _table("Name", "Type", "Module", "Updated")
    for record in records:
        module = record.block_type.partition(":")[0]
        table.add_row(
            _text(record.name), _text(record.type_name), _text(module), _time(record.updated)
        )
    _console().print(table)


@block.command("inspect")
@click.argument("name")
def block_inspect(name: str) -> None:
    """Show a block's type and fields; secret fields show as **********."""
    from vivace.blocks.encryption import mask_secrets
    from vivace.blocks.store import read_block

    record = read_block(_database_url(), name)
    if record is None:
        raise _Failure(f"block {name!r} not found; see `vivace block ls`")
    details = _table("", "", title=f"Block {name!r}", show_header=False)
    for label, value in (
        ("Name", record.name),
        ("Type", record.block_type),
        ("ID", str(record.id)),
        ("Created", _time(record.created)),
        ("Updated", _time(record.updated)),
    ):
        details.add_row(label, _text(value))
    fields = _table("Field", "Value", title="Fields")
    for field, value in mask_secrets(record.data).items():
        fields.add_row(_text(field), _text(_show(value)))
    console = _console()
    console.print(details)
    console.print()
    console.print(fields)


@block.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def block_delete(name: str, yes: bool) -> None:
    """Delete a saved block (its secrets are gone for good)."""
    from vivace.blocks.store import delete_block, read_block

    url = _database_url()
    record = read_block(url, name)
    if record is None:
        raise _Failure(f"block {name!r} not found; see `vivace block ls`")
    if not yes:
        click.confirm(f"Delete the {record.type_name} block {name!r}?", abort=True)
    if not delete_block(url, name):
        raise _Failure(f"block {name!r} not found; it was deleted meanwhile")
    click.echo(f"Deleted block {name!r}.")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)
