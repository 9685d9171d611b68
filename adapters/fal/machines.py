"""fal machine types -> the Ray resources a replica asks for.

`GPU-<TYPE>` asks for whole GPUs of Ray accelerator type `<TYPE>` (Ray advertises it as
the node resource `accelerator_type:<TYPE>`). CPU sizes take a fraction of a core, so
that a small node holds many small apps; Ray's default of one CPU per replica would fit
two replicas on a two-core machine.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

CPU_SIZES: dict[str, float] = {"XS": 0.1, "S": 0.25, "M": 0.5, "L": 1.0, "XL": 2.0}
GPU_PREFIX = "GPU-"
CPUS_PER_GPU_REPLICA = 1.0


class UnplaceableError(ValueError):
    """No machine type of an app fits any node of the cluster, now or after autoscaling."""


def accelerator_type(machine_type: str) -> Optional[str]:
    """`GPU-A100` -> `A100`; `None` for CPU sizes."""
    return machine_type[len(GPU_PREFIX):] if machine_type.upper().startswith(GPU_PREFIX) else None


def check_machine_type(machine_type: str) -> None:
    if machine_type.upper() in CPU_SIZES:
        return
    gpu = accelerator_type(machine_type)
    if not gpu:
        raise UnplaceableError(
            f"unknown machine_type {machine_type!r}: use a CPU size "
            f"({', '.join(CPU_SIZES)}) or a GPU type such as 'GPU-A100'"
        )


def replica_resources(machine_type: str, num_gpus: Optional[int] = None) -> dict[str, float]:
    """What one replica of this machine type takes from a node, in Ray's resource names."""
    check_machine_type(machine_type)
    gpu = accelerator_type(machine_type)
    if gpu is None:
        return {"CPU": CPU_SIZES[machine_type.upper()]}
    # Ray's `accelerator_type` actor option asks for this sliver of the node's resource.
    return {"CPU": CPUS_PER_GPU_REPLICA, "GPU": float(num_gpus or 1), f"accelerator_type:{gpu}": 0.001}


def shortfall(need: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """The resources that keep `need` off every node in `nodes`; empty when one node fits.
    A resource that some node has but none has together with the rest is named too."""
    if any(all(node.get(name, 0) >= amount for name, amount in need.items()) for node in nodes):
        return []
    lacking = [name for name, amount in need.items() if not any(node.get(name, 0) >= amount for node in nodes)]
    return lacking or sorted(need)


def describe_resources(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(resources.items()))


def actor_options(
    machine_types: list[str], num_gpus: Optional[int], nodes: Sequence[Mapping[str, float]]
) -> dict[str, Any]:
    """Ray actor options for the first machine type, in order, that fits a node in `nodes`
    (the total resources of each node the cluster has or its autoscaler can add)."""
    for machine_type in machine_types:
        check_machine_type(machine_type)
    refused = []
    for machine_type in machine_types:
        need = replica_resources(machine_type, num_gpus)
        missing = shortfall(need, nodes)
        if not missing:
            gpu = accelerator_type(machine_type)
            if gpu is None:
                return {"num_cpus": need["CPU"]}
            return {"num_cpus": need["CPU"], "num_gpus": int(need["GPU"]), "accelerator_type": gpu}
        refused.append(f"{machine_type} (needs {describe_resources(need)}; no node has {', '.join(missing)})")
    types = sorted({k.split(":", 1)[1] for node in nodes for k in node if k.startswith("accelerator_type:")})
    most_gpus = max((node.get("GPU", 0) for node in nodes), default=0)
    raise UnplaceableError(
        "no node of this cluster fits " + " or ".join(refused)
        + f"; its nodes have at most GPU={most_gpus:g}, accelerator types: {', '.join(types) or 'none'}"
    )
