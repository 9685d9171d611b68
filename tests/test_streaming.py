"""Streaming answers as fal's SDK serves them: generator endpoints as JSON lines (FastAPI's),
server-sent events from a StreamingResponse; websocket endpoints work through the ingress
with the same keys as every other call."""

import asyncio
import json

import httpx
import websockets

from helpers import APPS, deployed


def _events(http, path: str, body: dict, **headers: str) -> list[tuple[str, dict]]:
    events, kind = [], "message"
    with http.stream("POST", path, json=body, headers=headers) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                kind = "message"
    return events


def _json_lines(http, path: str, body: dict) -> list[dict]:
    with http.stream("POST", path, json=body) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("application/jsonl")
        return [json.loads(line) for line in stream.iter_lines() if line]


def test_streaming_endpoints_stream_as_they_go(cli, http) -> None:
    deployed(cli, f"{APPS}/streaming.py::Talker", "--user", "sam")
    assert _json_lines(http, "/sam/talker/words", {"text": "one two three"}) == [
        {"index": 0, "text": "one"}, {"index": 1, "text": "two"}, {"index": 2, "text": "three"}]
    assert _json_lines(http, "/sam/talker/lines", {"text": "a b"}) == [
        {"index": 0, "text": "A"}, {"index": 1, "text": "B"}]
    try:  # a stream that fails midway ends there: cut off, or closed after the lines made before
        cut = _json_lines(http, "/sam/talker/lines", {"text": "a boom c"})
    except httpx.TransportError:
        cut = None
    assert cut in (None, [{"index": 0, "text": "A"}])
    assert _events(http, "/sam/talker/stream", {"text": "x y"}) == [
        ("message", {"index": 0, "text": "x"}), ("message", {"index": 1, "text": "y"})]
    assert http.post("/sam/talker/words", json={}).status_code == 422


def test_websocket_endpoints_take_keys_like_http(cli, base_url, keys) -> None:
    deployed(cli, f"{APPS}/streaming.py::Talker", "--user", "sam", "--app-name", "private-talker", "--auth", "private")
    url = base_url.replace("http://", "ws://") + "/sam/private-talker/ws"

    async def talk() -> list[dict]:
        async with websockets.connect(url, additional_headers={"authorization": f"Key {keys['sam']}"}) as socket:
            answers = []
            for text in ("hello", "tenantserve"):
                await socket.send(json.dumps({"text": text}))
                answers.append(json.loads(await socket.recv()))
            return answers

    async def refused(headers: dict) -> int:
        """The handshake's HTTP status, or the close code (4401, 4403) of a socket closed at once."""
        try:
            async with websockets.connect(url, additional_headers=headers) as socket:
                await socket.recv()
        except websockets.InvalidStatus as rejected:
            return rejected.response.status_code
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code - 4000 if closed.rcvd else 0
        return 0

    assert asyncio.run(talk()) == [{"echo": "hello", "length": 5}, {"echo": "tenantserve", "length": 11}]
    assert asyncio.run(refused({})) == 401
    assert asyncio.run(refused({"authorization": f"Key {keys['rita']}"})) == 403
