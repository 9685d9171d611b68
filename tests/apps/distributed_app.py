"""A fal.distributed app as fal's docs write one: a DistributedRunner started in setup()
with two workers, each holding a part of the answer, combined with an all-reduce."""

import fal
from fal.distributed import DistributedRunner, DistributedWorker
from pydantic import BaseModel


class Numbers(BaseModel):
    values: list[float]


class Summer(DistributedWorker):
    def setup(self, **kwargs) -> None:
        import torch

        self.weight = torch.tensor(float(self.rank + 1))

    def __call__(self, streaming: bool = False, values: list = (), **kwargs) -> dict:
        import torch
        import torch.distributed as dist

        total = torch.tensor(values, device=self.device).sum() * self.weight
        dist.all_reduce(total)
        return {"total": total.item(), "workers": self.world_size, "device": str(self.device)}


class Distributed(fal.App, keep_alive=300, max_concurrency=1):
    machine_type = "M"
    requirements = ["pyzmq"]  # fal.distributed's transport between the runner and its workers

    async def setup(self) -> None:
        self.runner = DistributedRunner(worker_cls=Summer, world_size=2)
        await self.runner.start()

    @fal.endpoint("/")
    async def total(self, request: Numbers) -> dict:
        return await self.runner.invoke(request.model_dump())
