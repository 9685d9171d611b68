import os
import uuid

import fal
from pydantic import BaseModel


class Loaded(BaseModel):
    instance: str
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
        self.instance = uuid.uuid4().hex

    @fal.endpoint("/")
    def where(self) -> Loaded:
        return Loaded(instance=self.instance, snapshot=self.snapshot, hf_home=os.environ["HF_HOME"],
                      offline=os.environ.get("HF_HUB_OFFLINE", ""))
