"""``Process``: a flow run in a local subprocess of the worker.

The launch spec is the argv ``[<the worker's python>, "-m", "vivace.engine", <flow run id>]``, the
environment (the worker's own, then what the worker hands every run, then ``env``) and the working
directory. The process starts in a session of its own, so stopping it signals its whole process
group (a flow that started subprocesses of its own takes them down with it) and a Ctrl-C in the
worker's terminal does not reach it. ``stop`` sends SIGTERM, which the engine turns into a recorded
end (CANCELLED when the run is being cancelled, else CRASHED), and SIGKILL after the grace period.

Its exit code is read with ``poll`` (which also reaps it: a worker never leaves zombies).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from typing import Any, ClassVar

from pydantic import Field

from vivace.exceptions import InfrastructureError
from vivace.infrastructure.base import Infrastructure, Launched, engine_command


class Process(Infrastructure):
    """A flow run in a local process, started with the worker's Python::

    Process(env={"OMP_NUM_THREADS": "1"}, working_dir="/srv/flows")
    """

    type: ClassVar[str] = "process"

    working_dir: str | None = Field(
        default=None,
        description="Working directory the process starts in (the engine then works in the "
        "folder it fetches the code into); default: the worker's.",
    )
    stream_output: bool = Field(
        default=True,
        description="Let the run's output through to the worker's stdout and stderr; "
        "otherwise it is discarded (its logs are in the run history either way).",
    )

    def launch_spec(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> dict[str, Any]:
        return {
            "command": engine_command(flow_run_id, python=sys.executable),
            "env": self.environment(environment),
            "working_dir": self.working_dir,
        }

    def start(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> LaunchedProcess:
        spec = self.launch_spec(flow_run_id, environment)
        output = None if self.stream_output else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                spec["command"],
                env={**os.environ, **spec["env"]},
                cwd=spec["working_dir"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        except OSError as error:
            where = f" in {spec['working_dir']!r}" if spec["working_dir"] else ""
            raise InfrastructureError(
                f"Process cannot start {' '.join(spec['command'])!r}{where}: "
                f"{type(error).__name__}: {error}"
            ) from None
        return LaunchedProcess(process)


class LaunchedProcess(Launched):
    """A started process; ``identifier`` is its pid."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.identifier = str(process.pid)
        self.description = f"process {process.pid}"

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM to its process group, then SIGKILL if it still runs after ``grace_seconds``;
        returns once it has exited (and was reaped)."""
        process = self.process
        if process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            process.wait()

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)  # its own session: pgid == pid
        except ProcessLookupError:
            pass  # already gone
