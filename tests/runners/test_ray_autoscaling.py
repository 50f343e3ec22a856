"""RayTaskRunner on an autoscaling Ray cluster: resource demand from runner_options adds nodes.

Ray's own fake multi-node autoscaler (``ray.cluster_utils.AutoscalingCluster``) starts a head on
this machine whose autoscaler launches "nodes" (more raylets on this machine) when tasks ask for a
resource only a worker node type has. ``AutoscalingCluster.start()`` and ``shutdown()`` run
``ray stop --force`` (so does this module's own ``start()``, which puts the head on a free port:
6379 may be taken), which stops every Ray on the machine: this module has its own, and runs only
once the module-scoped Ray fixtures of the other modules are torn down (pytest runs modules one
after another and tears a module's fixtures down before the next module starts).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vivace import flow, task
from vivace.engine.context import current_flow_run_id

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from vivace.runners import RayTaskRunner  # noqa: E402

HERE = Path(__file__).resolve().parent
RAY_CLI = str(Path(sys.executable).parent / "ray")
MB = 1024 * 1024


class FakeMultiNodeCluster(cluster_utils.AutoscalingCluster):  # type: ignore[misc]
    """AutoscalingCluster with its base config given here: the PyPI wheel lacks the
    ``fake_multi_node/example.yaml`` it reads (this is that file's content, trimmed)."""

    _config_file: str | None = None

    def _generate_config(
        self,
        head_resources: dict[str, Any],
        worker_node_types: dict[str, Any],
        autoscaler_v2: bool = False,
        **config_kwargs: Any,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "cluster_name": "fake_multinode",
            "max_workers": 8,
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": {
                **worker_node_types,
                "ray.head.default": {
                    "resources": head_resources,
                    "node_config": {},
                    "max_workers": 0,
                },
            },
            "head_node_type": "ray.head.default",
            "auth": {},
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": 0.1,
            "docker": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }
        config.update(config_kwargs)
        return config

    def start(self, _system_config: Any = None, override_env: dict[str, str] | None = None) -> None:
        """As AutoscalingCluster.start, with the head on a free port (6379 may be taken)."""
        subprocess.run([RAY_CLI, "stop", "--force"], check=True, capture_output=True, timeout=120)
        port = _free_port()
        # The nodes the fake provider adds join the head there (it assumes 6379 otherwise).
        ip = ray._private.services.get_node_ip_address()
        self._config["provider"]["gcs_address"] = f"{ip}:{port}"
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as config:
            json.dump(self._config, config)
        self._config_file = config.name
        resources = dict(self._head_resources)
        command = [
            RAY_CLI,
            "start",
            "--head",
            f"--port={port}",
            f"--autoscaling-config={config.name}",
            f"--num-cpus={resources.pop('CPU')}",
            f"--object-store-memory={resources.pop('object_store_memory')}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ]
        if resources:
            command.append(f"--resources={json.dumps(resources)}")
        env = {**os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
        env.update(override_env or {})
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
        ray._private.services.find_gcs_addresses.cache_clear()

    def shutdown(self) -> None:
        subprocess.run([RAY_CLI, "stop", "--force"], capture_output=True, timeout=120)
        ray._private.services.find_gcs_addresses.cache_clear()
        if self._config_file is not None:
            Path(self._config_file).unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def autoscaling_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A head with 1 CPU; up to 2 worker nodes of type ``burst`` (1 CPU, resource ``burst``)."""
    assert not ray.is_initialized(), "another module's Ray is still up in this process"
    # start() and shutdown() call `ray` by name: the venv's.
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    for name in [name for name in os.environ if name.startswith("VIVACE_")]:
        monkeypatch.delenv(name)  # the driver's settings travel with each task anyway
    cluster = FakeMultiNodeCluster(
        head_resources={"CPU": 1, "object_store_memory": 100 * MB},
        worker_node_types={
            "ray.worker.burst": {
                "resources": {"CPU": 1, "burst": 1, "object_store_memory": 100 * MB},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
    )
    worker_path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    try:
        cluster.start(override_env={"RAY_AUTH_MODE": "disabled", "PYTHONPATH": worker_path})
        yield None
    finally:
        cluster.shutdown()


@task(runner_options={"num_cpus": 1, "resources": {"burst": 1}})
def on_a_burst_node(i: int) -> str:
    time.sleep(1.0)  # long enough that the pending demand asks for a second node
    return str(ray.get_runtime_context().get_node_id())


def test_resource_demand_from_runner_options_makes_the_autoscaler_add_nodes(
    autoscaling_cluster: None, history: Any
) -> None:
    run_ids: list[uuid.UUID | None] = []

    @flow(task_runner=RayTaskRunner(address="auto"))
    def burst() -> list[str]:
        run_ids.append(current_flow_run_id())
        return [future.result() for future in on_a_burst_node.map(range(4))]

    node_ids = burst()

    assert len(node_ids) == 4
    ray.init(address="auto", log_to_driver=False)
    try:
        nodes = {node["NodeID"]: node for node in ray.nodes() if node["Alive"]}
    finally:
        ray.shutdown()
    assert len(nodes) >= 2  # the head, and at least one node the autoscaler added
    for node_id in set(node_ids):  # every run ran on an added node: the head has no "burst"
        assert nodes[node_id]["Resources"].get("burst") == 1.0
    runs = history.task_runs(run_ids[0])
    assert len(runs) == 4 and {run.state_type for run in runs} == {"COMPLETED"}
