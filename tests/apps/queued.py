import asyncio
import os

import fal
from fal.exceptions import AppException
from pydantic import BaseModel

# This runner process's id: inside its PID namespace every runner's pid is the same.
RUNNER = int.from_bytes(os.urandom(7), "big")


class Work(BaseModel):
    label: str
    seconds: float = 0.0


class Done(BaseModel):
    label: str
    pid: int


class Worker(fal.App, keep_alive=300, min_concurrency=1, max_concurrency=1, max_multiplexing=1):
    """One request at a time, so that further requests wait in the queue."""

    machine_type = "XS"

    @fal.endpoint("/")
    async def work(self, request: Work) -> Done:
        print(f"working on {request.label}")
        await asyncio.sleep(request.seconds)
        print(f"done with {request.label}")
        return Done(label=request.label, pid=RUNNER)

    @fal.endpoint("/refuse")
    def refuse(self, request: Work) -> Done:
        raise AppException(f"cannot do {request.label}", status_code=400)
