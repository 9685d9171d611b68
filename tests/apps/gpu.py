import os

import fal
import ray
from pydantic import BaseModel


class Placement(BaseModel):
    gpu_ids: list[int]
    cuda_visible_devices: str
    node_id: str


class GpuApp(fal.App, keep_alive=30):
    machine_type = "GPU-A100"

    @fal.endpoint("/")
    def where(self) -> Placement:
        return Placement(
            gpu_ids=[int(i) for i in ray.get_gpu_ids()],
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            node_id=ray.get_runtime_context().get_node_id(),
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

        return PlacedEnvironment(node_id=ray.get_runtime_context().get_node_id(), prefix=sys.prefix)
