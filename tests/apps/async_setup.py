import asyncio
import os

import fal
from pydantic import BaseModel

# This runner process's id: inside its PID namespace every runner's pid is the same.
RUNNER = int.from_bytes(os.urandom(7), "big")


class Loaded(BaseModel):
    model: str
    pid: int


class AsyncLoader(fal.App, name="async-loader"):
    machine_type = "XS"

    async def setup(self) -> None:
        await asyncio.sleep(0.1)
        self.model = "loaded asynchronously"

    @fal.endpoint("/")
    async def which(self) -> Loaded:
        return Loaded(model=self.model, pid=RUNNER)
