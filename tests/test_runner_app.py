"""The ASGI app a runner serves: fal's own app for the App class, in this process (no
cluster, no sandbox), called as the replica calls it."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytest.importorskip("fal")

from tenantserve_runner.app import IDLE_LAYERS, _layer_name, build, load_class, warm_up  # noqa: E402

SOURCE = '''
import fal
from pydantic import BaseModel


class Message(BaseModel):
    text: str


class Hinted(fal.App):
    def setup(self):
        self.prefix = "ready:"

    def provide_hints(self):
        return ["gpu-a", "gpu-b"]

    @fal.endpoint("/")
    def echo(self, request: Message) -> dict:
        return {"text": self.prefix + request.text, "request_id": self.current_request.request_id}

    @fal.endpoint("/fail")
    def fail(self, request: Message) -> dict:
        raise fal.exceptions.FieldException("text", "not this one")
'''


@pytest.fixture
def served(monkeypatch):
    import fal.ref

    monkeypatch.setattr(fal.ref, "current_app", None)
    _, asgi = build(load_class("/apps/hinted.py", SOURCE, "hinted", "Hinted"))

    async def call(*requests):
        async with asgi.router.lifespan_context(asgi):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://runner") as client:
                return [await client.request(method, path, **kwargs) for method, path, kwargs in requests]

    return asgi, lambda *requests: asyncio.run(call(*requests))


def test_fal_app_answers_with_its_request_context_hints_and_error_shapes(served):
    _, call = served
    ok, failed, preflight = call(
        ("POST", "/", {"json": {"text": "hi"}, "headers": {"x-fal-request-id": "req-1"}}),
        ("POST", "/fail", {"json": {"text": "hi"}}),
        ("OPTIONS", "/", {"headers": {"origin": "https://example.com", "access-control-request-method": "POST"}}),
    )
    assert ok.status_code == 200
    assert ok.json() == {"text": "ready:hi", "request_id": "req-1"}
    assert ok.headers["x-fal-runner-hints"] == "gpu-a,gpu-b"
    assert failed.status_code == 422
    assert failed.json()["detail"][0]["loc"] == ["body", "text"]
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://example.com"


def test_layers_that_do_nothing_in_a_runner_are_left_out(served):
    asgi, _ = served
    layers = {_layer_name(layer) for layer in asgi.user_middleware}
    assert not layers & IDLE_LAYERS
    assert {"provide_hints_headers", "set_current_request_context", "CORSMiddleware"} <= layers


def test_a_spares_warm_up_leaves_nothing_for_the_app_that_claims_it(monkeypatch):
    """A spare serves one request of its own before a claim; the claimed app then loads and
    answers as in a fresh runner."""
    import fal.ref

    monkeypatch.setattr(fal.ref, "current_app", None)
    warm_up()
    assert fal.ref.current_app is None
    _, asgi = build(load_class("/apps/hinted.py", SOURCE, "hinted", "Hinted"))

    async def call():
        async with asgi.router.lifespan_context(asgi):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://runner") as client:
                return await client.post("/", json={"text": "hi"})

    assert asyncio.run(call()).json()["text"] == "ready:hi"


PRINTING = '''
import fal


class Printing(fal.App):
    @fal.endpoint("/")
    def talk(self, request: dict) -> dict:
        for n in range(request["lines"]):
            print("line", n)
        return {}
'''


def test_an_answer_says_how_many_lines_its_request_printed_and_the_lines_carry_its_id(monkeypatch):
    """The replica waits for exactly these lines (the queue keeps them with the result)."""
    import io
    import json
    import sys

    import fal.ref

    from tenantserve_runner.logs import OUTPUT_LINES_HEADER, TaggedLines, tag_requests

    monkeypatch.setattr(fal.ref, "current_app", None)
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stdout", TaggedLines(pipe, "stdout"))
    _, asgi = build(load_class("/apps/printing.py", PRINTING, "printing", "Printing"))

    async def call():
        async with asgi.router.lifespan_context(asgi):
            transport = httpx.ASGITransport(app=tag_requests(asgi))
            async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
                return [await client.post("/", json={"lines": n}, headers={"x-fal-request-id": f"r{n}"})
                        for n in (3, 0)]

    three, none = asyncio.run(call())
    assert three.headers[OUTPUT_LINES_HEADER.decode()] == "3" and none.headers[OUTPUT_LINES_HEADER.decode()] == "0"
    lines = [json.loads(line) for line in pipe.getvalue().splitlines()]
    assert [(line["r"], line["m"]) for line in lines if line["r"]] == [("r3", "line 0"), ("r3", "line 1"),
                                                                      ("r3", "line 2")]
    assert not TaggedLines.written  # forgotten once answered


def test_the_replica_keeps_a_queued_requests_lines_as_they_arrive_and_waits_no_longer_than_its_bound():
    """The answer can be on the runner's socket before its last lines are read from the pipe."""
    from tenantserve.adapters.fal.replica import OUTPUT_WAIT_S, RequestOutput

    async def late_lines() -> tuple[RequestOutput, float]:
        output = RequestOutput()
        output.add({"message": "first"})
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, output.add, None)
        loop.call_later(0.06, output.add, {"message": "last"})
        started = time.monotonic()
        await output.complete(3)
        return output, time.monotonic() - started

    output, waited = asyncio.run(late_lines())
    assert output.lines == 3 and [entry["message"] for entry in output.entries] == ["first", "last"]
    assert waited < OUTPUT_WAIT_S

    async def missing_line() -> float:
        output = RequestOutput()
        started = time.monotonic()
        await output.complete(1)  # a line the runner counted but the pipe never gave
        return time.monotonic() - started

    assert OUTPUT_WAIT_S <= asyncio.run(missing_line()) < OUTPUT_WAIT_S + 2


def test_distributed_runners_that_name_no_port_each_get_a_free_one(monkeypatch):
    """fal's default rendezvous port (29500) is one per machine; a node here runs many runners."""
    from fal.distributed import DistributedRunner, DistributedWorker

    from tenantserve_runner.distributed import free_master_ports

    monkeypatch.setattr(DistributedRunner, "__init__", DistributedRunner.__init__)  # undone after the test
    free_master_ports()
    free_master_ports()  # once is enough: a second call wraps nothing again
    first, second = (DistributedRunner(worker_cls=DistributedWorker, world_size=2) for _ in range(2))
    assert 29500 not in (first.master_port, second.master_port) and first.master_port != second.master_port
    assert DistributedRunner(DistributedWorker, 2, "127.0.0.1", 31234).master_port == 31234
    assert DistributedRunner(worker_cls=DistributedWorker, master_port=31235).master_port == 31235


def test_the_replica_sends_requests_only_to_the_runner_it_started(tmp_path):
    """A runner can write its socket's folder: a link put in the socket's place, to another
    listener of the node, gets a refused connection and none of the request."""
    import os

    import aiohttp

    from tenantserve.adapters.fal.supervisor import RUNNER_URL, runner_client

    path, received = tmp_path / "app.sock", []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(1024))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def call(listener_pid: int) -> int:
        server = await asyncio.start_unix_server(answer, path=str(path))  # listening in this process
        client = runner_client(path, lambda: listener_pid)
        try:
            async with client.post(RUNNER_URL + "/", data=b"the tenant's request") as response:
                return response.status
        finally:
            await client.close()
            server.close()

    assert asyncio.run(call(os.getpid())) == 200 and len(received) == 1
    with pytest.raises(aiohttp.ClientConnectorError, match="is not the runner's socket"):
        asyncio.run(call(os.getpid() + 1))
    assert len(received) == 1  # nothing was sent to the other listener
