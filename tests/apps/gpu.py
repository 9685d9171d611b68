import os

import fal
from pydantic import BaseModel


def _gpu_ids() -> list[int]:
    """The GPUs the runner was given (Ray's assignment, as CUDA_VISIBLE_DEVICES)."""
    return [int(i) for i in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if i.strip()]


class Placement(BaseModel):
    gpu_ids: list[int]
    cuda_visible_devices: str
    node_id: str


class GpuApp(fal.App, keep_alive=30):
    machine_type = "GPU-A100"

    @fal.endpoint("/")
    def where(self) -> Placement:
        return Placement(
            gpu_ids=_gpu_ids(),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            node_id=os.environ["TENANTSERVE_NODE_ID"],  # the node the platform placed the replica on
        )


class H100App(GpuApp):
    machine_type = ["GPU-H100", "GPU-H200"]


class AlwaysOnGpu(GpuApp, min_concurrency=1):
    """Keeps a replica, so its placement (and the loss of its node) stays visible."""


class TwoA100Replicas(GpuApp, min_concurrency=2, max_concurrency=2, startup_timeout=8):
    """Needs two A100 replicas at once; a one-A100 cluster can place only one."""


class AlwaysOnCpu(GpuApp, min_concurrency=1):
    machine_type = "XS"


class WaitsForH100(GpuApp, startup_timeout=6):
    machine_type = "GPU-H100"


class PlacedEnvironment(BaseModel):
    node_id: str
    prefix: str


class HumanizedOnGpu(fal.App, name="humanized-on-gpu"):
    """Its environment is built on whichever node its replica lands on."""

    machine_type = "GPU-A100"
    requirements = ["humanize==4.9.0"]

    @fal.endpoint("/")
    def where(self) -> PlacedEnvironment:
        import sys

        import humanize  # noqa: F401

        return PlacedEnvironment(node_id=os.environ["TENANTSERVE_NODE_ID"], prefix=sys.prefix)
