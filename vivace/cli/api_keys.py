"""``vivace api-key``: create, list and revoke the API keys the server accepts.

    vivace api-key create --name NAME --role read|admin
    vivace api-key ls
    vivace api-key revoke NAME_OR_PREFIX

``create`` prints the key once, alone on standard output (``KEY=$(vivace api-key create ...)``
works), and what to do with it on standard error; only its hash is stored.
"""

from __future__ import annotations

import click

from vivace.cli import _console, _database_url, _Failure, _table, _text, _time, cli


@cli.group("api-key")
def api_key() -> None:
    """API keys for the server (roles: read, admin)."""


@api_key.command("create")
@click.option("--name", required=True, help="A name that says who uses the key (unique).")
@click.option(
    "--role",
    type=click.Choice(["read", "admin"]),
    required=True,
    help="read: pages, read endpoints, /metrics; admin: also the endpoints that change things.",
)
def api_key_create(name: str, role: str) -> None:
    """Create a key and print it: it is shown this once, and only its hash is kept."""
    from vivace.store.api_keys import KEY_CACHE_SECONDS, create_api_key

    record, key = create_api_key(_database_url(), name, role)
    click.echo(
        f"Created the API key {record.name!r} (role {record.role}, prefix {record.prefix}). "
        "Copy it now: it cannot be shown again. Send it as 'Authorization: Bearer <key>'. "
        f"A running server that had no key before asks for keys within {KEY_CACHE_SECONDS:.0f} s.",
        err=True,
    )
    click.echo(key)


@api_key.command("ls")
def api_key_ls() -> None:
    """List the keys (names, prefixes and roles; never the keys themselves)."""
    from vivace.store.api_keys import list_api_keys

    records = list_api_keys(_database_url())
    if not records:
        click.echo("No API keys: the server is open to anyone who can reach it.")
        return
    table = _table("Name", "Prefix", "Role", "Created", "Last used", "Revoked")
    for record in records:
        table.add_row(
            _text(record.name),
            record.prefix,
            record.role,
            _time(record.created),
            _time(record.last_used),
            _time(record.revoked),
        )
    _console().print(table)


@api_key.command("revoke")
@click.argument("name_or_prefix", metavar="NAME_OR_PREFIX")
def api_key_revoke(name_or_prefix: str) -> None:
    """Revoke a key, by name or by the prefix `ls` shows; servers refuse it within seconds."""
    from vivace.store.api_keys import KEY_CACHE_SECONDS, revoke_api_key

    record = revoke_api_key(_database_url(), name_or_prefix)
    if record is None:
        raise _Failure(
            f"no API key is named {name_or_prefix!r} or has that prefix; "
            "`vivace api-key ls` lists them"
        )
    click.echo(
        f"The API key {record.name!r} (prefix {record.prefix}) is revoked since "
        f"{_time(record.revoked)}; running servers refuse it within {KEY_CACHE_SECONDS:.0f} s."
    )
