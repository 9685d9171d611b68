"""Apps whose options place or keep their replicas: fal's concurrency_buffer, regions and data_mounts."""

import asyncio
import os
from pathlib import Path

import fal
from pydantic import BaseModel


class Nap(BaseModel):
    seconds: float = 0.0


class Buffered(fal.App, keep_alive=1, min_concurrency=0, max_concurrency=3, concurrency_buffer=1):
    """Scale to zero, were it not for one warm replica kept above the load."""

    machine_type = "XS"

    @fal.endpoint("/")
    async def nap(self, request: Nap) -> dict:
        await asyncio.sleep(request.seconds)
        return {"slept": request.seconds}


class Regional(fal.App, regions=["elsewhere", "local"]):
    machine_type = "XS"

    @fal.endpoint("/")
    def where(self) -> dict:
        return {"region": "local"}


class Elsewhere(Regional, regions=["elsewhere"], name="elsewhere"):
    pass


class CacheOnly(fal.App, data_mounts=["/data/.cache"]):
    """Sees only the cache folder of its owner's /data."""

    machine_type = "XS"

    @fal.endpoint("/")
    def look(self) -> dict:
        Path("/data/.cache/mine").write_text("kept")
        try:
            Path("/data/other").write_text("x")
            wrote_outside = True
        except OSError:
            wrote_outside = False
        return {"data": sorted(os.listdir("/data")), "cache": sorted(os.listdir("/data/.cache")),
                "wrote_outside": wrote_outside, "hf_home": os.environ["HF_HOME"]}
