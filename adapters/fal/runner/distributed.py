"""fal.distributed in a runner: worker processes that can load the app's classes, and,
on a node without GPUs, torch's gloo backend instead of NCCL.

fal's DistributedRunner spawns its workers with torch.multiprocessing, sending them the
app's worker class with cloudpickle; the app's module exists only in the runner (it is
run from the deployed text), so it must travel by value. fal starts each worker with the
NCCL backend on `cuda:<rank>`; where CUDA is not available (a CPU node, a test) the
workers use gloo on the CPU, so that the same app runs, more slowly, anywhere.

fal runs one app per machine, so every DistributedRunner's rendezvous is on port 29500;
here the runners of a node share its network, and the second distributed app (or replica)
on a node would find that port taken: a runner that names no port gets a free one.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import os
import socket
import sys
import types
from typing import Any, Callable, Optional, Union


def prepare(app_module: types.ModuleType) -> None:
    """Called once the app's module has loaded; does nothing unless it uses fal.distributed."""
    if "fal.distributed" not in sys.modules:
        return
    import cloudpickle
    import torch

    from fal.distributed import utils

    cloudpickle.register_pickle_by_value(app_module)
    free_master_ports()
    if not torch.cuda.is_available():
        utils.wrap_distributed_worker = cpu_worker  # what fal's launcher spawns, looked up when it spawns


def free_master_ports() -> None:
    """DistributedRunners that name no `master_port` get a free port of their `master_addr`."""
    from fal.distributed import DistributedRunner

    init = DistributedRunner.__init__
    if getattr(init, "__wrapped__", None) is not None:
        return
    signature = inspect.signature(init)

    @functools.wraps(init)
    def init_on_a_free_port(self: DistributedRunner, *args: Any, **kwargs: Any) -> None:
        named = signature.bind(self, *args, **kwargs).arguments
        if "master_port" not in named:
            with socket.socket() as probe:
                probe.bind((named.get("master_addr", "127.0.0.1"), 0))
                kwargs["master_port"] = probe.getsockname()[1]
        init(self, *args, **kwargs)

    DistributedRunner.__init__ = init_on_a_free_port  # type: ignore[method-assign]


def cpu_worker(rank: int, func: Callable[..., Any], world_size: int, master_addr: str, master_port: int,
               timeout: int, cwd: Optional[Union[str, os.PathLike]], args: tuple, kwargs: dict) -> None:
    """One worker process, as fal's own wrapper starts it, on the CPU with gloo."""
    import torch
    import torch.distributed as dist

    torch.cuda.set_device = lambda device: None  # DistributedWorker.initialize pins its GPU
    # fal pickles its own modules by value: the worker class arrives with a copy of fal's
    # DistributedWorker as its base, which is where `device` (cuda:<rank>) is.
    worker_class = getattr(getattr(func, "__self__", None), "worker_cls", None)
    for klass in getattr(worker_class, "__mro__", ()):
        if klass.__name__ == "DistributedWorker":
            klass.device = property(lambda self: torch.device("cpu"))
    if cwd:
        os.chdir(str(cwd))
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
    dist.init_process_group(backend="gloo", init_method="env://", world_size=world_size, rank=rank,
                            timeout=datetime.timedelta(seconds=timeout))
    try:
        func(*args, **kwargs)
    finally:
        dist.destroy_process_group()
