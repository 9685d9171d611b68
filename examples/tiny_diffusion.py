"""The seed's SDXL-flash app, shaped for a CPU and a tiny local pipeline: the same
scheduler swap (DPMSolverSinglestepScheduler, trailing timesteps), 7 steps, guidance 3,
and a `fal.toolkit.Image` answer, served as a URL on the platform's `/files`.

Build the pipeline once (`python examples/tiny_pipeline.py`), then
`platform deploy examples/tiny_diffusion.py::TinyDiffusion`.
"""

import os

import fal
from fal.toolkit import Image
from pydantic import BaseModel, Field


class Input(BaseModel):
    prompt: str
    width: int = Field(default=64, ge=8, le=512, multiple_of=8)
    height: int = Field(default=64, ge=8, le=512, multiple_of=8)
    seed: int = 0


class Output(BaseModel):
    image: Image


class TinyDiffusion(fal.App, keep_alive=300, max_multiplexing=1):
    # One CPU; bench/gpu_smoke.sh sets a GPU type (GPU-H100, ...) to run it in fp16 on CUDA.
    machine_type = os.environ.get("TINY_DIFFUSION_MACHINE", "L")
    # No `requirements`: diffusers, transformers and torch come with the node
    # (`pip install 'tenantserve[diffusers]'`); a per-app list would build a new
    # environment and fetch torch again.

    def setup(self):
        import torch
        from diffusers import DPMSolverSinglestepScheduler, StableDiffusionPipeline

        # The owner's area of the node's model cache, /data in the app's runner.
        folder = os.path.join(os.environ["TENANTSERVE_MODEL_CACHE"], "tiny-sd")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(self.device)
        self.pipe.scheduler = DPMSolverSinglestepScheduler.from_config(
            self.pipe.scheduler.config,
            timestep_spacing="trailing",
        )
        self.pipe.set_progress_bar_config(disable=True)

    @fal.endpoint("/")
    def run(self, request: Input) -> Output:
        import torch

        result = self.pipe(
            request.prompt, num_inference_steps=7, guidance_scale=3, width=request.width, height=request.height,
            generator=torch.Generator(self.device).manual_seed(request.seed),
        )
        return Output(image=Image.from_pil(result.images[0]))
