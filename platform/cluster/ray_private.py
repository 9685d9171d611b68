"""Every use of Ray's private API outside the Serve patches (`serve_patches.py`, which
changes Serve's controller, proxy and replica classes): what a Ray upgrade must check
again is these two modules.

The platform runs on the one Ray version it was tested with; `check_ray_version()` fails
with the reason on any other, before a private name is looked up.
"""

from __future__ import annotations

from typing import Any, Optional

import ray

SUPPORTED_RAY = "2.60.0"


class UnsupportedRay(RuntimeError):
    """The installed Ray is not the version the platform's use of Ray's internals was checked on."""


def check_ray_version(version: Optional[str] = None) -> None:
    found = version or ray.__version__
    if found != SUPPORTED_RAY:
        raise UnsupportedRay(
            f"tenantserve needs Ray {SUPPORTED_RAY} (it reaches into Ray Serve's internals, checked on that "
            f"version); this node has Ray {found}: `pip install 'ray[serve]=={SUPPORTED_RAY}'`"
        )


check_ray_version()


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (not the CLI or a driver)."""
    return getattr(ray._private.worker.global_worker, "mode", None) == ray.WORKER_MODE


def serve_client() -> Any:
    """The connected driver's client of Serve's controller (status, details, HTTP config)."""
    from ray.serve.context import _get_global_client

    return _get_global_client()


def serve_controller() -> Any:
    """Serve's controller actor, for what Serve's public API asks only of every app at once
    (and slowly, with many apps): app names, one deployment's details."""
    return serve_client()._controller


def free_resources_per_node() -> dict[str, dict[str, float]]:
    from ray._private.state import available_resources_per_node

    return available_resources_per_node()


def cluster_config() -> Any:
    """The node groups Ray's v2 autoscaler (KubeRay) reported to the GCS; None if none."""
    return ray._private.state.state.get_cluster_config()


def reload_ray_config() -> None:
    """Ray reads its environment config once at import; read it again (after RAY_AUTH_MODE changed)."""
    from ray._raylet import Config

    Config.initialize("")


def pinned(deployment: Any, version: str) -> Any:
    """A deployment whose replicas are kept as long as `version` stays the same: Serve's
    public `version` option, which it accepts only alongside its internal flag."""
    return deployment.options(version=version, _internal=True)


class Raylet:
    """The two raylet calls that keep spare workers, over Ray's own authenticated gRPC channel."""

    def __init__(self, address: str) -> None:
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import node_manager_pb2_grpc

        self.address = address
        self._stub = node_manager_pb2_grpc.NodeManagerServiceStub(init_grpc_channel(address, asynchronous=True))

    async def idle_workers(self) -> int:
        """Python workers that have taken no job yet: the ones any replica can start in."""
        from ray.core.generated import common_pb2, node_manager_pb2

        stats = await self._stub.GetNodeStats(node_manager_pb2.GetNodeStatsRequest(), timeout=5)
        unassigned = bytes.fromhex("ff" * 4)
        return sum(
            1 for worker in stats.core_workers_stats
            if worker.worker_type == common_pb2.WORKER and worker.job_id == unassigned
            and worker.language == common_pb2.PYTHON
        )

    async def prestart(self, count: int, keep_alive_s: int) -> None:
        from ray.core.generated import common_pb2, node_manager_pb2

        request = node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.PYTHON, keep_alive_duration_secs=keep_alive_s, num_workers=count,
        )
        await self._stub.PrestartWorkers(request, timeout=5)
