"""One image through the platform against the same pipeline called directly, in one run.

The tiny Stable Diffusion pipeline (examples/tiny_pipeline.py) is built into a throwaway
platform's model cache; examples/tiny_diffusion.py serves it. The direct call loads the
same folder in this process, with the same scheduler swap, steps, size and seed, and the
same number of torch threads as the replica (Ray gives a 1-CPU replica one thread).
Rounds alternate direct and platform calls so that both see the same machine load.

    python bench/image.py [--size 128] [--rounds 8]

Goal (issue 6): the platform's median at most 1.05x the direct call's.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

for library in ("DIFFUSERS", "TRANSFORMERS"):  # their load-time notices drown the table
    os.environ.setdefault(f"{library}_VERBOSITY", "error")

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from common import local_platform, platform, table  # noqa: E402
from tiny_pipeline import build  # noqa: E402

ROOT = Path(__file__).parent.parent


def direct_pipeline(folder: Path, device: str):  # type: ignore[no-untyped-def]
    import torch
    from diffusers import DPMSolverSinglestepScheduler, StableDiffusionPipeline

    torch.set_num_threads(1)
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype).to(device)
    pipe.scheduler = DPMSolverSinglestepScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)

    def generate(size: int, seed: int) -> float:
        started = time.perf_counter()
        image = pipe("a red fox", num_inference_steps=7, guidance_scale=3, width=size, height=size,
                     generator=torch.Generator(device).manual_seed(seed)).images[0]
        image.save(io.BytesIO(), format="PNG")  # the platform's answer is a PNG too
        return time.perf_counter() - started

    return generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cuda: fp16 on the GPU, for both sides "
                        "(set TINY_DIFFUSION_MACHINE to the node's GPU type, as bench/gpu_smoke.sh does)")
    args = parser.parse_args()
    with local_platform() as base:
        cache = Path(os.environ["TENANTSERVE_HOME"]) / "cache"
        build(cache / "tiny-sd")
        platform("deploy", str(ROOT / "examples/tiny_diffusion.py::TinyDiffusion"), "--auth", "public")
        url = f"{base}/bench/tiny-diffusion/"
        payload = {"prompt": "a red fox", "width": args.size, "height": args.size}
        generate = direct_pipeline(cache / "tiny-sd", args.device)
        with httpx.Client(timeout=300) as client:

            def through_platform(seed: int) -> float:
                started = time.perf_counter()
                answer = client.post(url, json={**payload, "seed": seed})
                elapsed = time.perf_counter() - started
                if answer.status_code != 200:
                    raise SystemExit(f"{url}: {answer.status_code} {answer.text}")
                return elapsed

            through_platform(0), generate(args.size, 0)  # warm both
            direct, served = [], []
            for seed in range(args.rounds):
                direct.append(generate(args.size, seed))
                served.append(through_platform(seed))
    rows = [("target", "median s", "min s", "max s", "runs")]
    for name, times in (("direct pipeline call", direct), ("through tenantserve", served)):
        rows.append((name, f"{statistics.median(times):.3f}", f"{min(times):.3f}", f"{max(times):.3f}", str(len(times))))
    where = "CUDA, fp16" if args.device == "cuda" else "CPU, 1 torch thread each"
    print(f"one {args.size}x{args.size} image, 7 steps, tiny SD ({where})")
    print(table(rows))
    print(f"ratio tenantserve / direct (medians): {statistics.median(served) / statistics.median(direct):.3f}x "
          "(goal <= 1.05x)")


if __name__ == "__main__":
    main()
