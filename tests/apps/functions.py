"""fal's function apps: `@fal.function(serve=True)` serves the function at POST /."""

from __future__ import annotations

import fal
from pydantic import BaseModel


class Greeting(BaseModel):
    name: str
    times: int = 1


@fal.function(serve=True, machine_type="XS", keep_alive=30, max_concurrency=2)
def greet(request: Greeting) -> dict:
    return {"greeting": " ".join([f"hello {request.name}"] * request.times)}


@fal.function(serve=True, machine_type="XS", requirements=["httpx"])
async def counted(count: int = 1234567) -> dict:
    import httpx  # the node's own: a list its packages satisfy builds no environment

    return {"digits": len(str(count)), "httpx": bool(httpx.__version__)}


@fal.function(machine_type="XS")
def one_off(x: int) -> int:
    return x * 2
