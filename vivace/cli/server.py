"""``vivace server start``: the HTTP server (history API, web UI, /metrics) under uvicorn.

    vivace server start [--host 127.0.0.1] [--port 4200] [--allow-unauthenticated] [--no-services]
    vivace server services start [--only NAME ...]
    vivace server services ls

It migrates the database first, then serves until SIGTERM or Ctrl-C, and exits 0 after a clean
shutdown. The services (:mod:`vivace.services`: scheduler, late and zombie runs, notifications,
retention) run inside it on background threads, unless ``--no-services`` (or
``VIVACE_SERVER_SERVICES=false``) says they run elsewhere, alone, with ``vivace server services
start``. While no API key exists (none stored, not even revoked, none in ``VIVACE_API_KEYS``)
the server is open, so it refuses to listen on an address other machines can reach unless told
``--allow-unauthenticated``; and, unless so told, while open it answers only requests addressed to
``localhost`` or an IP address, so that no other site's page can read it through a browser.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from types import FrameType
from typing import TYPE_CHECKING

import click

from vivace.cli import _BadInput, _database_url, cli

if TYPE_CHECKING:
    from fastapi import FastAPI


@cli.group("server")
def server() -> None:
    """The HTTP server: the history API, the web UI and /metrics."""


@server.command("start")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=4200, show_default=True)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    help=(
        "Serve without an API key beyond this machine, and under any host name (anyone who can "
        "reach the server can read)."
    ),
)
@click.option(
    "--no-services",
    is_flag=True,
    help="Do not run the services here (they run with `vivace server services start`).",
)
def server_start(host: str, port: int, allow_unauthenticated: bool, no_services: bool) -> None:
    """Serve the run history over HTTP until stopped (SIGTERM or Ctrl-C)."""
    from vivace.settings import get_settings, secret_value, use_settings
    from vivace.store.api_keys import parse_env_api_keys, read_key_roles
    from vivace.store.database import masked_url, upgrade_database

    url = _database_url()
    # A bad value stops us before any I/O.
    env_keys = parse_env_api_keys(secret_value(get_settings().api_keys))
    upgrade_database(url)
    roles = {**read_key_roles(url), **env_keys}  # revoked keys too: they keep the server closed
    if not roles and not allow_unauthenticated and not is_loopback(host):
        raise _BadInput(
            f"refusing to listen on {host}: no API key exists, so anyone who can reach the server "
            "could read the run history; create one with `vivace api-key create --name NAME "
            "--role admin`, or pass --allow-unauthenticated"
        )

    from vivace.server.app import create_app

    # Open and on this machine: refuse requests addressed to another name (DNS rebinding).
    app = create_app(url, local_hosts_only_while_open=not allow_unauthenticated)
    if roles:
        active = sum(role is not None for role in roles.values())
        access = f"API keys required ({active} active)"
    else:
        access = "no API key exists: open to anyone who can reach it"
    click.echo(f"vivace server on {_base_url(host, port)} over {masked_url(url)}; {access}")
    runner = None
    if get_settings().server_services and not no_services:
        from vivace.services.runner import ServiceRunner

        link_base = _default_ui_url(host, port)
        if link_base is not None:
            use_settings(get_settings().model_copy(update={"ui_url": link_base}))
        runner = ServiceRunner(url)
        runner.start()
        click.echo(f"services: {', '.join(service.name for service in runner.services)}")
        if link_base is not None:
            click.echo(
                f"notifications link to runs under {link_base} (set VIVACE_UI_URL to change)"
            )
    try:
        serve(app, host, port)
    finally:
        if runner is not None:
            runner.stop()


@server.group("services")
def services() -> None:
    """The server's services, run alone (when the API is scaled out) or inspected."""


@services.command("start")
@click.option(
    "--only",
    "names",
    multiple=True,
    metavar="NAME",
    help="Run only this service (repeatable); default: all of them.",
)
def services_start(names: tuple[str, ...]) -> None:
    """Run the services until stopped (SIGTERM or Ctrl-C), without the HTTP server."""
    from vivace.services.runner import ServiceRunner
    from vivace.store.database import masked_url, upgrade_database

    url = _database_url()
    try:
        runner = ServiceRunner(url, names or None)
    except ValueError as error:
        raise _BadInput(str(error)) from None
    disabled = sorted(set(names) - {service.name for service in runner.services})
    if disabled:
        # Asked for by name yet off: running nothing and saying nothing would hide the mistake.
        raise _BadInput(
            f"service {', '.join(map(repr, disabled))} is disabled by the settings in force "
            "(retention needs VIVACE_RETENTION_DAYS); `vivace server services ls` shows them"
        )
    upgrade_database(url)
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda *_: runner.stop(0)) for number in stop_signals}
    runner.start()
    shown = ", ".join(service.name for service in runner.services) or "none (all disabled)"
    click.echo(f"vivace services over {masked_url(url)}: {shown}")
    try:
        runner.wait()
    finally:
        runner.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)


@services.command("ls")
def services_ls() -> None:
    """Each service: whether it is enabled, its interval, and its last loop."""
    import datetime as dt

    from rich.console import Console
    from rich.table import Table

    from vivace.services import load_services
    from vivace.settings import get_settings
    from vivace.store.service_state import read_service_states

    settings = get_settings()
    rows = read_service_states(_database_url())
    states = {state.name: state.data.get("loop") or {} for state in rows}
    table = Table("service", "enabled", "every", "last loop", "took", "outcome")
    for service in load_services():
        loop = states.get(service.name, {})
        last = loop.get("last_loop")
        when = "-"
        if last:
            when = dt.datetime.fromtimestamp(last, dt.UTC).isoformat(" ", "seconds")
        took = f"{loop['seconds']:.3f} s" if "seconds" in loop else "-"
        outcome = f"error: {loop['error']}" if loop.get("error") else (loop.get("summary") or "-")
        table.add_row(
            service.name,
            "yes" if service.enabled(settings) else "no",
            f"{service.interval(settings):g} s",
            when,
            took,
            outcome,
        )
    Console(width=160).print(table)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run ``app`` under uvicorn until SIGTERM or SIGINT, then return after a clean shutdown."""
    import uvicorn

    # Once shut down, uvicorn raises the signal that stopped it again, for the handler that was
    # there before. Python's default handlers would then kill the process (SIGTERM: exit -15) or
    # raise KeyboardInterrupt; a handler that does nothing lets the command end with exit 0.
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, _already_handled) for number in stop_signals}
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # uvicorn will say it cannot listen there
    return bool(addresses) and all(
        ipaddress.ip_address(str(address)).is_loopback for address in addresses
    )


def _default_ui_url(host: str, port: int) -> str | None:
    """Where the links in notifications point when neither ``VIVACE_UI_URL`` nor
    ``VIVACE_API_URL`` says: this server, reached on this machine when it listens on every
    interface (as a published container port is); None when a setting says."""
    from vivace.settings import get_settings

    settings = get_settings()
    if settings.ui_url or settings.api_url:
        return None
    wildcard = host.strip("[]") in ("", "0.0.0.0", "::")
    return _base_url("localhost" if wildcard else host, port)


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def _already_handled(number: int, frame: FrameType | None) -> None:
    """uvicorn has already shut down cleanly on this signal: nothing is left to do."""
