"""Where replicas can go: the shapes of the cluster's nodes, those running and those its
autoscaler can still add, and why a replica that is not running waits.

A deploy is judged against shapes, not the cluster's sum of resources: a two-GPU replica
does not fit two one-GPU nodes, and a GPU-A100 app does fit a cluster whose A100 group
the autoscaler keeps at zero nodes until an app asks for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import ray

from tenantserve.adapters.fal.machines import REGION_KEY, REGION_LABEL, SOME_REGION, describe_resources, shortfall
from tenantserve.platform.cluster import ray_private
from tenantserve.platform.core import settings

# `ray up` leaves the autoscaler's config on the head node here.


@dataclass(frozen=True)
class NodeShape:
    name: str
    resources: dict[str, float]
    running: bool  # a live node; False for a node group the autoscaler can add
    available: dict[str, float] = field(default_factory=dict)


def _groups_from_gcs() -> list[NodeShape]:
    """Node groups as Ray's v2 autoscaler (KubeRay) reports them to the GCS."""
    try:
        config = ray_private.cluster_config()
    except Exception:  # not reported, or an older GCS: no groups known
        return []
    if config is None:
        return []
    return [  # the GCS does not report a group's labels: its nodes may be in any region
        NodeShape(f"group {group.name}", {**{k: float(v) for k, v in group.resources.items()}, SOME_REGION: 1.0},
                  running=False)
        for group in config.node_group_configs
        if group.max_count != 0
    ]


def _groups_from_bootstrap(path: Path) -> list[NodeShape]:
    """Node types of a `ray up` cluster, from the config its autoscaler runs on."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    shapes = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        if node_type.get("max_workers", 1) == 0 and name != config.get("head_node_type"):
            continue
        resources = {k: float(v) for k, v in (node_type.get("resources") or {}).items()}
        resources.update(_region(node_type.get("labels") or {}) or {SOME_REGION: 1.0})
        shapes.append(NodeShape(f"group {name}", resources, running=False))
    return shapes


def autoscaler_groups() -> list[NodeShape]:
    path = settings.AUTOSCALER_CONFIG.value()
    return _groups_from_gcs() or (_groups_from_bootstrap(path) if path.is_file() else [])


def _region(labels: Mapping[str, str]) -> dict[str, float]:
    """A node's region label as placement checks see it: a key of its shape."""
    region = labels.get(REGION_LABEL)
    return {REGION_KEY + region: 1.0} if region else {}


def running_nodes() -> list[NodeShape]:
    free = ray_private.free_resources_per_node()
    return [
        NodeShape(node["NodeID"], {**node["Resources"], **_region(node.get("Labels") or {})}, running=True,
                  available=dict(free.get(node["NodeID"], {})))
        for node in ray.nodes()
        if node["Alive"]
    ]


def node_shapes() -> list[Mapping[str, float]]:
    """The total resources of every node a replica could be placed on, now or after autoscaling."""
    return [shape.resources for shape in running_nodes() + autoscaler_groups()]


def waiting_reason(need: Mapping[str, float], nodes: list[NodeShape]) -> str:
    """Why a replica that asks for `need` is not running yet, as an operator should read it."""
    running = [n for n in nodes if n.running]
    if not shortfall(need, [n.resources for n in running]):
        if shortfall(need, [n.available for n in running]):
            return f"waiting for free resources (each replica needs {describe_resources(need)})"
        return ""
    groups = [n for n in nodes if not n.running and not shortfall(need, [n.resources])]
    if groups:
        return f"waiting for the autoscaler to add a node of {groups[0].name.removeprefix('group ')}"
    missing = shortfall(need, [n.resources for n in nodes])
    return f"cannot be placed: no node has {', '.join(missing)} (each replica needs {describe_resources(need)})"


def actor_resources(ray_actor_options: Mapping[str, Any]) -> dict[str, float]:
    """Serve's ray_actor_options for a deployment -> the resources each replica takes."""
    need = {"CPU": float(ray_actor_options.get("num_cpus") or 0)}
    if ray_actor_options.get("num_gpus"):
        need["GPU"] = float(ray_actor_options["num_gpus"])
    if ray_actor_options.get("accelerator_type"):
        need[f"accelerator_type:{ray_actor_options['accelerator_type']}"] = 0.001
    need.update({k: float(v) for k, v in (ray_actor_options.get("resources") or {}).items()})
    return {k: v for k, v in need.items() if v}
