"""``python -m vivace.engine <flow_run_id>``: run one flow run of a deployment, then exit.

What every infrastructure a worker starts runs (:func:`vivace.infrastructure.engine_command`);
see :mod:`vivace.deployments.execute`. Exit code 0 when the run COMPLETED, 1 when it ended
otherwise or could not start, 2 for an unknown id; a SIGTERM that stops it exits 143.

A SIGTERM at any point of the process's life (fetching the code, importing the flow, running it)
ends the run recorded, CANCELLED if it was being cancelled, else CRASHED, and removes the
temporary code folder; once the run has ended, SIGTERM is ignored while the records are written
and the folder removed (:func:`vivace.engine.signals.install_process_sigterm_handler`).

Once the run is over and its records are written, the process ends at once (``os._exit``): a
task thread still running in a cancelled or crashed run (Python cannot stop a thread) must not
keep it alive.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback

from vivace.exceptions import VivaceError

USAGE = "usage: python -m vivace.engine FLOW_RUN_ID"


def main(argv: list[str], *, restore_sigterm: bool = True) -> int:
    """Run the flow run ``argv[0]``; the exit code. ``restore_sigterm=False`` (the script) keeps
    the process's SIGTERM handler until :func:`_exit` ignores SIGTERM, so no SIGTERM between the
    two can kill the process before its records are written."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from vivace.deployments.execute import execute_flow_run
    from vivace.engine.signals import (
        install_process_sigterm_handler,
        restore_process_sigterm_handler,
    )

    previous = install_process_sigterm_handler()
    try:
        return execute_flow_run(argv[0])
    except SystemExit as stop:  # SIGTERM (the run is recorded)
        return stop.code if isinstance(stop.code, int) else 1
    except KeyboardInterrupt:
        return 130
    except VivaceError as error:
        print(f"vivace.engine: {error}", file=sys.stderr)
        return 1
    except BaseException:  # the run is recorded CRASHED; say why, as Python would
        traceback.print_exc()
        return 1
    finally:
        if restore_sigterm:
            restore_process_sigterm_handler(previous)


def _exit(code: int) -> None:
    """Write out what is buffered, then end the process even if stray threads still run."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the run is over: let the records out
    try:
        writer = sys.modules.get("vivace.store.writer")
        if writer is not None:
            writer.shutdown_writers()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    _exit(main(sys.argv[1:], restore_sigterm=False))
