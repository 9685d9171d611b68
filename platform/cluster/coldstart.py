"""What makes the first request to an app scaled to zero fast: preloaded in every Ray
worker, it keeps spare workers on every node (`SpareWorkers`), imports the replica's code
and the Serve patches before the worker takes work, starts the worker's spare runner and
collects the heap Serve would otherwise walk on the request's path. Why each of these
exists and what it saves: docs/operations.md, "Cold starts".
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import ray
from ray import serve
from ray.serve import RunTarget

import tenantserve.adapters.fal.replica  # noqa: F401  (what a replica imports, loaded ahead)
import tenantserve.platform.cluster.serve_patches  # noqa: F401  (applied on import, in every worker)
from tenantserve.adapters.fal import spare_runner
from tenantserve.platform.cluster import ray_private

logger = logging.getLogger("ray.serve")

APP_NAME = "spares"
CHECK_S = 1.0
# A prestarted worker takes a few seconds to import and register; until then it is
# counted as coming, so that one missing spare is not asked for twice.
BOOT_S = 8.0
# The raylet keeps a prestarted worker this long even when it has more idle workers than
# CPUs; after that it may stop it, and the keeper starts another.
KEEP_ALIVE_S = 3600


if ray_private.in_ray_worker():  # imported by a Ray worker as it starts, not by the CLI or a driver
    spare_runner.start()
    gc.collect()
    gc.freeze()


class SpareWorkers:
    """Keeps `per_node` unassigned Python workers waiting on every alive node."""

    async def __init__(self, per_node: int) -> None:
        self.per_node = per_node
        self._raylets: dict[str, ray_private.Raylet] = {}
        self._starting: dict[str, _Starting] = {}
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            try:
                await self.top_up()
            except Exception:
                logger.exception("spare workers: top-up failed")
            await asyncio.sleep(CHECK_S)

    async def top_up(self) -> dict[str, int]:
        """Start what is missing on each alive node; returns the spares found per node."""
        found: dict[str, int] = {}
        for node in ray.nodes():
            if not node["Alive"]:
                continue
            node_id = node["NodeID"]
            address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
            raylet = self._raylets.get(node_id)
            if raylet is None or raylet.address != address:
                raylet = self._raylets[node_id] = ray_private.Raylet(address)
            idle = found[node_id] = await raylet.idle_workers()
            starting = self._starting.setdefault(node_id, _Starting())
            missing = self.per_node - idle - starting.still_coming(idle)
            if missing > 0:
                await raylet.prestart(missing, KEEP_ALIVE_S)
                starting.asked(missing)
        return found

    def check_health(self) -> None:
        if self._task.done():
            raise RuntimeError("the spare-worker keeper stopped")


class _Starting:
    """Workers asked for on one node that have not registered yet (a registered one shows
    up as one more idle worker; one not seen within BOOT_S is given up on)."""

    def __init__(self) -> None:
        self.count = 0
        self.since = 0.0
        self.last_idle = 0

    def still_coming(self, idle: int) -> int:
        if idle > self.last_idle:
            self.count = max(0, self.count - (idle - self.last_idle))
        self.last_idle = idle
        if time.monotonic() - self.since > BOOT_S:
            self.count = 0
        return self.count

    def asked(self, count: int) -> None:
        self.count += count
        self.since = time.monotonic()


def spares_target(config: dict, version: str) -> RunTarget:
    deployment = serve.deployment(SpareWorkers, name="SpareWorkers", num_replicas=1,
                                  ray_actor_options={"num_cpus": 0})
    deployment = ray_private.pinned(deployment, version)
    return RunTarget(target=deployment.bind(config["spare_workers"]), name=APP_NAME, route_prefix=None)
