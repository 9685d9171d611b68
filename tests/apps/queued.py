import asyncio
import os
from typing import Optional

import fal
import fastapi
from fal.exceptions import AppException, RequestCancelledException
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

    def setup(self) -> None:
        self.tasks: dict[str, asyncio.Task] = {}

    @fal.endpoint("/")
    async def work(self, request: Work) -> Done:
        print(f"working on {request.label}")
        await asyncio.sleep(request.seconds)
        print(f"done with {request.label}")
        return Done(label=request.label, pid=RUNNER)

    @fal.endpoint("/refuse")
    def refuse(self, request: Work) -> Done:
        raise AppException(f"cannot do {request.label}", status_code=400)

    @fal.endpoint("/stoppable")
    async def stoppable(self, request: Work, x_fal_request_id: Optional[str] = fastapi.Header(None)) -> Done:
        """Cancellable as fal's docs show: the work is a task its /cancel sibling cancels."""
        task = asyncio.create_task(asyncio.sleep(request.seconds))
        self.tasks[x_fal_request_id] = task
        try:
            await task
        except asyncio.CancelledError:
            print(f"stopped {request.label}")
            raise RequestCancelledException("Request cancelled") from None
        finally:
            self.tasks.pop(x_fal_request_id, None)
        return Done(label=request.label, pid=RUNNER)

    @fal.endpoint("/stoppable/cancel")
    async def stop(self, x_fal_request_id: Optional[str] = fastapi.Header(None)) -> dict:
        task = self.tasks.get(x_fal_request_id)
        if task is not None:
            task.cancel()
        return {"cancelled": task is not None}


class QuietWorker(Worker, private_logs=True, name="quiet-worker"):
    """fal's private_logs: callers other than the owner see no logs of their requests."""


class OwnersDeadline(Worker, name="owners-deadline"):
    """fal's request_start_timeout: the owner's queued requests give up after 1 s in line."""

    request_start_timeout = 1
