"""fal machine types -> the Ray resources a replica asks for.

`GPU-<TYPE>` asks for whole GPUs of Ray accelerator type `<TYPE>` (Ray advertises it as
the node resource `accelerator_type:<TYPE>`), with fal's names translated to the ones Ray
gives the same cards (`RAY_NAMES`); fal's bare `GPU` takes any GPU. CPU sizes take a
fraction of a core, so that a small node holds many small apps; Ray's default of one CPU
per replica would fit two replicas on a two-core machine.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

CPU_SIZES: dict[str, float] = {"XS": 0.1, "S": 0.25, "M": 0.5, "L": 1.0, "XL": 2.0}
GPU_PREFIX = "GPU-"
ANY_GPU = "GPU"
# fal's GPU names -> the accelerator type Ray detects on a node with that card (Ray names a
# card by its model token: "NVIDIA RTX A6000" -> RTX-A6000, "NVIDIA A100-SXM4-40GB" -> A100,
# so both A100 sizes are one type to Ray). Any other `GPU-<TYPE>` is Ray's own name.
RAY_NAMES = {"A6000": "RTX-A6000", "A100-40GB": "A100", "A100-80GB": "A100", "H100-80GB": "H100"}
CPUS_PER_GPU_REPLICA = 1.0
# fal's `regions` -> Ray's node label for a node's region (Ray sets it from RAY_NODE_REGION
# at `ray start`; KubeRay from the pod's topology). Placement checks see a node's region as
# the key `region:<name>` of its shape.
REGION_LABEL = "ray.io/availability-region"
REGION_KEY = "region:"
SOME_REGION = REGION_KEY + "*"  # a node group whose nodes' region is known only once they start


class UnplaceableError(ValueError):
    """No machine type of an app fits any node of the cluster, now or after autoscaling."""


def is_gpu(machine_type: str) -> bool:
    return machine_type.upper() == ANY_GPU or accelerator_type(machine_type) is not None


def accelerator_type(machine_type: str) -> Optional[str]:
    """The Ray accelerator type a machine type asks for: `GPU-A100` -> `A100`, `GPU-A6000`
    -> `RTX-A6000`; `None` for CPU sizes and for fal's bare `GPU` (any GPU)."""
    if not machine_type.upper().startswith(GPU_PREFIX) or len(machine_type) == len(GPU_PREFIX):
        return None
    name = machine_type[len(GPU_PREFIX):]
    return RAY_NAMES.get(name.upper(), name)


def check_machine_type(machine_type: str) -> None:
    if machine_type.upper() in CPU_SIZES:
        return
    if not is_gpu(machine_type):
        raise UnplaceableError(
            f"unknown machine_type {machine_type!r}: use a CPU size "
            f"({', '.join(CPU_SIZES)}) or a GPU type such as 'GPU-A100'"
        )


def replica_resources(machine_type: str, num_gpus: Optional[int] = None) -> dict[str, float]:
    """What one replica of this machine type takes from a node, in Ray's resource names."""
    check_machine_type(machine_type)
    if not is_gpu(machine_type):
        return {"CPU": CPU_SIZES[machine_type.upper()]}
    need = {"CPU": CPUS_PER_GPU_REPLICA, "GPU": float(num_gpus or 1)}
    gpu = accelerator_type(machine_type)
    if gpu is not None:  # Ray's `accelerator_type` actor option asks for this sliver of the node's resource
        need[f"accelerator_type:{gpu}"] = 0.001
    return need


def shortfall(need: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """The resources that keep `need` off every node in `nodes`; empty when one node fits.
    A resource that some node has but none has together with the rest is named too."""
    if any(all(node.get(name, 0) >= amount for name, amount in need.items()) for node in nodes):
        return []
    lacking = [name for name, amount in need.items() if not any(node.get(name, 0) >= amount for node in nodes)]
    return lacking or sorted(need)


def describe_resources(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(resources.items()))


def region_selector(regions: Sequence[str]) -> dict[str, str]:
    """The label selector that keeps replicas on nodes in one of `regions`."""
    return {REGION_LABEL: regions[0] if len(regions) == 1 else f"in({','.join(regions)})"}


def _in_regions(nodes: Sequence[Mapping[str, float]], regions: Sequence[str]) -> list[Mapping[str, float]]:
    inside = [node for node in nodes if node.get(SOME_REGION) or any(node.get(REGION_KEY + r) for r in regions)]
    if not inside:
        known = sorted({k[len(REGION_KEY):] for node in nodes for k in node if k.startswith(REGION_KEY)})
        raise UnplaceableError(
            f"no node of this cluster is in region {' or '.join(regions)} (its nodes' regions: "
            f"{', '.join(known) or 'none set'}); a node's region is Ray's {REGION_LABEL} label, "
            "set by RAY_NODE_REGION=<region> where `ray start` runs"
        )
    return inside


def actor_options(
    machine_types: list[str], num_gpus: Optional[int], nodes: Sequence[Mapping[str, float]],
    regions: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
    """Ray actor options for the first machine type, in order, that fits a node in `nodes`
    (the total resources of each node the cluster has or its autoscaler can add) in one
    of `regions` (None: any)."""
    for machine_type in machine_types:
        check_machine_type(machine_type)
    if regions:
        placed = actor_options(machine_types, num_gpus, _in_regions(nodes, regions))
        return {**placed, "label_selector": region_selector(regions)}
    refused = []
    for machine_type in machine_types:
        need = replica_resources(machine_type, num_gpus)
        missing = shortfall(need, nodes)
        if not missing:
            if not is_gpu(machine_type):
                return {"num_cpus": need["CPU"]}
            gpu = accelerator_type(machine_type)
            return {"num_cpus": need["CPU"], "num_gpus": int(need["GPU"]),
                    **({"accelerator_type": gpu} if gpu is not None else {})}
        refused.append(f"{machine_type} (needs {describe_resources(need)}; no node has {', '.join(missing)})")
    types = sorted({k.split(":", 1)[1] for node in nodes for k in node if k.startswith("accelerator_type:")})
    most_gpus = max((node.get("GPU", 0) for node in nodes), default=0)
    raise UnplaceableError(
        "no node of this cluster fits " + " or ".join(refused)
        + f"; its nodes have at most GPU={most_gpus:g}, accelerator types: {', '.join(types) or 'none'}"
    )
