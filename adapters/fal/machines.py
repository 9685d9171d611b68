"""fal machine types -> the Ray resources a replica asks for.

`GPU-<TYPE>` asks for whole GPUs of Ray accelerator type `<TYPE>` (Ray advertises it as
the node resource `accelerator_type:<TYPE>`). CPU sizes take a fraction of a core, so
that a small node holds many small apps; Ray's default of one CPU per replica would fit
two replicas on a two-core machine.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

CPU_SIZES: dict[str, float] = {"XS": 0.1, "S": 0.25, "M": 0.5, "L": 1.0, "XL": 2.0}
GPU_PREFIX = "GPU-"
CPUS_PER_GPU_REPLICA = 1.0


class UnplaceableError(ValueError):
    """No machine type of an app fits any node of the cluster."""


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


def actor_options(
    machine_types: list[str],
    num_gpus: Optional[int],
    cluster_resources: Mapping[str, float],
) -> dict[str, Any]:
    """Ray actor options for the first machine type, in order, that this cluster has."""
    for machine_type in machine_types:
        check_machine_type(machine_type)
    missing = []
    for machine_type in machine_types:
        gpu = accelerator_type(machine_type)
        if gpu is None:
            return {"num_cpus": CPU_SIZES[machine_type.upper()]}
        gpus = num_gpus or 1
        resource = f"accelerator_type:{gpu}"
        if cluster_resources.get(resource, 0) > 0 and cluster_resources.get("GPU", 0) >= gpus:
            return {"num_cpus": CPUS_PER_GPU_REPLICA, "num_gpus": gpus, "accelerator_type": gpu}
        missing.append(f"{machine_type} (Ray resource {resource!r} with {gpus} GPU)")
    raise UnplaceableError(
        "no node of this cluster offers " + " or ".join(missing)
        + f"; the cluster has GPU={cluster_resources.get('GPU', 0):g} and accelerator types "
        + (", ".join(sorted(k.split(':', 1)[1] for k in cluster_resources if k.startswith('accelerator_type:'))) or "none")
    )
