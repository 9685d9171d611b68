import os

import fal
from pydantic import BaseModel


class Loaded(BaseModel):
    pid: int
    snapshot: str
    hf_home: str
    offline: str


class CachedWeights(fal.App, keep_alive=60, min_concurrency=2, max_concurrency=2):
    """Loads a pipeline by hub id, as the seed app does: with HF_HUB_OFFLINE=1 it comes
    from the node's pre-filled cache, never from the network."""

    machine_type = "XS"

    def setup(self):
        import torch
        from diffusers import StableDiffusionPipeline
        from huggingface_hub import snapshot_download

        self.pipe = StableDiffusionPipeline.from_pretrained("tenantserve-tests/tiny-sd", torch_dtype=torch.float32)
        self.snapshot = snapshot_download("tenantserve-tests/tiny-sd")

    @fal.endpoint("/")
    def where(self) -> Loaded:
        return Loaded(pid=os.getpid(), snapshot=self.snapshot, hf_home=os.environ["HF_HOME"],
                      offline=os.environ.get("HF_HUB_OFFLINE", ""))
