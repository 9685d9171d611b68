"""Request bodies: over-large ones refused before they are read or stored, and JSON that
no answer could carry back (NaN, Infinity, 1e400, 100,000 levels deep) refused with a 4xx,
on sync calls and in the queue alike."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tenantserve.adapters.fal.forward import Ingress
from tenantserve.adapters.fal.supervisor import Launch, Runner
from tenantserve.platform.core import bodies

from helpers import APPS, deployed, wait_until

ODD_BODIES = {
    "NaN": b'{"value": NaN}',
    "Infinity": b'{"value": -Infinity}',
    "1e400": b'{"value": 1e400}',
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "deep object": b'{"value": ' + b'{"a": ' * 300 + b"1" + b"}" * 301,
}


@pytest.mark.parametrize("name", sorted(ODD_BODIES))
def test_strict_json_refuses_what_cannot_be_read_back(name: str) -> None:
    with pytest.raises(ValueError):
        bodies.loads(ODD_BODIES[name])
    with pytest.raises(bodies.BodyError) as refused:
        bodies.parse_json(ODD_BODIES[name])
    assert refused.value.status_code == 422
    assert refused.value.detail[0]["type"] == "json_invalid"


def test_strict_json_keeps_ordinary_values() -> None:
    assert bodies.loads(b'{"a": [1, 2.5, -1e300, "NaN", null, true]}') == {"a": [1, 2.5, -1e300, "NaN", None, True]}
    with pytest.raises(ValueError):
        bodies.dumps({"x": float("inf")})


def test_read_limited_stops_at_the_limit_without_reading_on() -> None:
    read = []

    async def chunks():
        for _ in range(100):
            read.append(1)
            yield b"x" * 1000

    with pytest.raises(bodies.BodyError) as refused:
        asyncio.run(bodies.read_limited(chunks(), 2500, None))
    assert refused.value.status_code == 413 and len(read) == 3
    with pytest.raises(bodies.BodyError):
        asyncio.run(bodies.read_limited(chunks(), 10, declared=11))
    assert asyncio.run(bodies.read_limited(chunks(), 10**6, None)) == b"x" * 100_000


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> TestClient:
    """A replica's ingress, built in this process (no cluster), whose runner never starts:
    what it refuses, it refuses before the runner would see it."""
    runner = Runner(Launch(lambda info_fd: ["false"], tmp_path_factory.mktemp("sockets"), sandboxed=False),
                    lambda request, stream, line: None)
    return TestClient(bodies.BodyLimit(Ingress(runner, None, {}), 1000))


def test_an_apps_routes_refuse_odd_json_with_422(in_process: TestClient) -> None:
    for name, body in ODD_BODIES.items():
        if len(body) > 1000:
            continue
        answer = in_process.post("/", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 422, (name, answer.text)
        assert answer.json()["detail"][0]["type"] == "json_invalid"


def test_an_apps_routes_refuse_large_bodies_before_reading(in_process: TestClient) -> None:
    answer = in_process.post("/", content=b"x" * 1001, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]

    def chunked():
        for _ in range(5):
            yield b"[" * 300

    assert in_process.post("/", content=chunked(), headers={"content-type": "application/json"}).status_code == 413


def _declared_only(base_url: str, path: str, length: int, key: str = "") -> tuple[int, bytes]:
    """POST headers announcing `length` bytes and none of them: the answer shows the body
    was judged by its length, not read."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/json\r\n"
                + (f"Authorization: Key {key}\r\n" if key else "") + f"Content-Length: {length}\r\n\r\n")
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        status_line, _, body = answer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in status_line.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += sock.recv(65536)
    return int(status_line.split()[1]), body


def _queued_count() -> int:
    from tenantserve.platform.store.registry import Registry
    from tenantserve.platform.store.request_queue import requests_table

    with Registry().engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(requests_table)).scalar_one()


@pytest.fixture(scope="module")
def echo_any(cli) -> str:
    deployed(cli, f"{APPS}/echo_any.py::EchoAny", "--user", "sam")
    return "/sam/echo-any"


def test_odd_json_is_refused_on_sync_calls_and_in_the_queue(http, echo_any) -> None:
    before = _queued_count()
    for name, body in ODD_BODIES.items():
        sync = http.post(echo_any + "/", content=body, headers={"content-type": "application/json"})
        assert sync.status_code == 422, (name, sync.status_code, sync.text[:200])
        queued = http.post("/queue" + echo_any, content=body, headers={"content-type": "application/json"})
        assert queued.status_code == 422, (name, queued.status_code, queued.text[:200])
        assert queued.json()["detail"][0]["type"] == "json_invalid"
    assert _queued_count() == before  # nothing stored


def test_a_result_with_values_json_cannot_carry_reads_back_as_the_sync_call_answers(http, echo_any) -> None:
    # fal's serving code answers NaN as null (pydantic's JSON); the queue stores that answer.
    assert http.post(f"{echo_any}/nan", json={}).json() == {"value": None}
    submitted = http.post(f"/queue{echo_any}/nan", json={}).json()
    result = wait_until(lambda: (r := http.get(submitted["response_url"])).status_code != 400 and r, "the result")
    assert result.status_code == 200 and result.json() == {"value": None}, result.text
    assert http.get(submitted["status_url"]).json()["status"] == "COMPLETED"


def test_large_bodies_are_refused_before_they_are_read_or_stored(base_url, echo_any, keys) -> None:
    before = _queued_count()
    status, body = _declared_only(base_url, "/queue" + echo_any, 100 << 20)
    assert status == 413 and b"limit" in body
    assert _queued_count() == before
    assert _declared_only(base_url, echo_any + "/", 100 << 20)[0] == 413
    assert _declared_only(base_url, "/files/upload", 600 << 20)[0] == 401  # no key: refused before reading
    status, body = _declared_only(base_url, "/files/upload", 600 << 20, key=keys["sam"])
    assert status == 413 and b"512 MiB" in body
