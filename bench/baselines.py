"""The same trivial endpoint without tenantserve: bare Ray Serve, plain uvicorn + FastAPI,
and the bench app's own fal FastAPI app served inside a Serve replica (the path before
runners: the app's code in the replica's process, no runner hop).

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


def fal_app_in_replica():  # type: ignore[no-untyped-def]
    """fal's own FastAPI app for bench/apps/echo.py's Echo, built in the replica's process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_echo_app", os.path.join(os.path.dirname(__file__), "apps", "echo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Echo(_allow_init=True)._build_app()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
@serve.ingress(fal_app_in_replica)
class InReplicaEcho:
    pass


def run_in_replica(name: str) -> str:
    """Deploy the in-replica fal app (this module travels by value); returns its route."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    serve.run(InReplicaEcho.bind(), name=name, route_prefix=f"/{name}")
    return f"/{name}/"


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
