"""Other code calls deployed apps through Python handles, by endpoint method name."""

import time

import httpx
import pytest
from pydantic import BaseModel
from ray import serve

import tenantserve
from tenantserve.adapters.fal.replica import EndpointError

from helpers import ROOT, deployed


class Greeting(BaseModel):
    name: str


def test_handle_from_a_driver(cli) -> None:
    deployed(cli, str(ROOT / "examples/counter.py::Counter"), "--user", "lena")
    handle = tenantserve.get_handle("lena/counter")
    out = handle.greet({"name": "ada"})  # the endpoint's JSON answer: the app's classes live in its runner
    assert out["message"] == "Hello, ada!" and out["calls"] == 1
    assert handle.greet(Greeting(name="bob"))["calls"] == 2
    assert handle.greet.remote(name="cy").result()["message"] == "Hello, cy!"
    image = handle.swatch({"size": 8})["image"]
    assert (image["width"], image["height"]) == (8, 8) and image["url"].startswith("http")
    with pytest.raises(EndpointError) as refused:
        handle.swatch({"size": "big"})
    assert refused.value.status_code == 422


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Caller:
    async def __call__(self, request) -> dict:
        body = await request.json()
        out = await tenantserve.get_handle("lena/counter").greet.remote({"name": body["name"]})
        return {"relayed": out["message"]}


def test_handle_from_another_serve_deployment(cli, cluster) -> None:
    deployed(cli, str(ROOT / "examples/counter.py::Counter"), "--user", "lena")
    serve.run(Caller.bind(), name="lena-caller", route_prefix="/lena-caller")
    try:
        deadline = time.monotonic() + 30
        while True:
            response = httpx.post(f"{cluster['http_url']}/lena-caller", json={"name": "zoe"}, timeout=30)
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.json() == {"relayed": "Hello, zoe!"}
    finally:
        serve.delete("lena-caller")
