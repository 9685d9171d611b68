"""The same trivial endpoint without tenantserve: bare Ray Serve, and plain uvicorn + FastAPI.

No `from __future__ import annotations` here: this module travels to replicas by value,
and FastAPI must see the real `Message` class, not its name."""


import contextlib
import os
import subprocess
import sys
from typing import Iterator, Optional

from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve


class Message(BaseModel):
    text: str


def echo_api() -> FastAPI:
    api = FastAPI()

    @api.post("/")
    def echo(request: Message) -> Message:
        return request

    return api


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
@serve.ingress(echo_api)
class BareEcho:
    pass


def run_bare_serve(name: str, runtime_env: Optional[dict] = None, **autoscaling: object) -> str:
    """Deploy the bare Serve baseline (this module travels by value); returns its route."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    deployment = BareEcho.options(autoscaling_config=autoscaling) if autoscaling else BareEcho
    if runtime_env:
        deployment = deployment.options(ray_actor_options={"num_cpus": 0.1, "runtime_env": runtime_env})
    serve.run(deployment.bind(), name=name, route_prefix=f"/{name}")
    return f"/{name}/"


@contextlib.contextmanager
def plain_uvicorn(port: int) -> Iterator[str]:
    """The same endpoint on plain uvicorn + FastAPI in a process of its own; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "baselines:echo_api", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=os.path.dirname(__file__),
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=10)
