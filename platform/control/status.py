"""`platform status`: the cluster's nodes, the node groups its autoscaler can add, and
every app with its replicas, where they run, and why any is missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import ray

from tenantserve.platform.cluster import ray_private
from tenantserve.platform.cluster.placement import autoscaler_groups
from tenantserve.platform.cluster.ray_cluster import HEAD_RESOURCE, ClusterInfo
from tenantserve.platform.control.apps import AppStatus, list_apps
from tenantserve.platform.store.registry import Registry


@dataclass
class NodeRow:
    id: str
    address: str
    alive: bool
    head: bool
    total: dict[str, float]
    free: dict[str, float]

    @property
    def accelerators(self) -> list[str]:
        return sorted(k.split(":", 1)[1] for k in self.total if k.startswith("accelerator_type:"))


@dataclass
class PlatformStatus:
    address: str
    http_url: str
    dashboard_url: Optional[str]
    metrics_url: Optional[str]
    nodes: list[NodeRow] = field(default_factory=list)
    node_groups: dict[str, dict[str, float]] = field(default_factory=dict)
    apps: list[AppStatus] = field(default_factory=list)


def _nodes() -> list[NodeRow]:
    free = ray_private.free_resources_per_node()
    rows = []
    for node in ray.nodes():
        total = {k: v for k, v in node["Resources"].items() if not k.startswith("node:")}
        available = free.get(node["NodeID"], {}) if node["Alive"] else {}
        rows.append(NodeRow(
            id=node["NodeID"], address=node["NodeManagerAddress"], alive=node["Alive"],
            head=HEAD_RESOURCE in node["Resources"], total=total,
            free={k: available.get(k, 0.0) for k in total},  # Ray leaves out what is used up
        ))
    return sorted(rows, key=lambda row: (not row.alive, not row.head, row.id))


def platform_status(cluster: ClusterInfo, registry: Registry, owner: Optional[str] = None) -> PlatformStatus:
    """Nodes and apps (one owner's, or everyone's when `owner` is None)."""
    return PlatformStatus(
        address=cluster.address,
        http_url=cluster.http_url,
        dashboard_url=cluster.dashboard_url,
        metrics_url=cluster.metrics_url,
        nodes=_nodes(),
        node_groups={group.name.removeprefix("group "): group.resources for group in autoscaler_groups()},
        apps=list_apps(cluster.http_url, registry, owner=owner),
    )
