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
