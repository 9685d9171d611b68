"""The replica's ingress: each HTTP request and websocket, passed to the runner as it came.

The app-relative path goes on (`/<user>/<app>/x` -> `/x`), with fal's `x-fal-request-id`
header; the runner's answer comes back byte for byte, streamed. What the runner cannot
answer is answered here: a 504 when `request_timeout` passes (and the runner is recycled,
so the work stops), a 503 naming the cause when the runner dies mid-request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any, Callable, Optional
from urllib.parse import quote

import aiohttp
import websockets
from websockets.asyncio.client import unix_connect
from yarl import URL

from tenantserve.platform.core.bodies import BodyError, parse_json
from tenantserve.platform.core.outcomes import RunnerLost
from tenantserve.platform.runtime.auth import CALLER, relative_path
from tenantserve_runner.logs import OUTPUT_LINES_HEADER

from .supervisor import RUNNER_URL, Runner

logger = logging.getLogger("ray.serve")

REQUEST_ID = "x-fal-request-id"
_HOP_BY_HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade",
               b"proxy-connection", b"content-length", b"expect", REQUEST_ID.encode()}
_WS_SKIP = _HOP_BY_HOP | {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
                          b"sec-websocket-protocol"}


def _text_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Headers as aiohttp sends them (it writes text as UTF-8); a value that is not UTF-8
    cannot pass through it unchanged and is left out."""
    found = []
    for key, value in headers:
        try:
            found.append((key.decode("ascii"), value.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return found


def _json_answer(status: int, body: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    data = json.dumps(body).encode()
    return status, [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())], data


class _Body:
    """A runner's answer body, chunk by chunk. Read to its end, broken off or closed unread
    (`aclose()`: the queue drops a streamed answer before its first chunk), it gives its
    connection back and calls `done` once: an async generator closed before its first
    chunk would skip its cleanup."""

    def __init__(self, response: aiohttp.ClientResponse, done: Callable[[bool], None],
                 lost: Optional[Callable[[], str]] = None) -> None:
        """`done(broke_off)`; `lost`, for a queued request: why the runner stopped, and a break
        raises RunnerLost with it (the queue runs the request again)."""
        self._response, self._done, self._lost = response, done, lost
        self._closed = False

    def __aiter__(self) -> "_Body":
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk = await self._response.content.readany()
        except aiohttp.ClientError:  # the caller's answer is cut off too: one that ends cleanly would look complete
            self._close(broke_off=True)
            if self._lost is not None:
                raise RunnerLost(f"{self._lost()} while answering this request") from None
            raise
        if not chunk:
            self._close(broke_off=False)
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._close(broke_off=False)

    def _close(self, broke_off: bool) -> None:
        if not self._closed:
            self._closed = True
            self._response.release()
            self._done(broke_off)


class Ingress:
    """The ASGI app of one replica: requests to its runner, with the platform's answers
    for what the runner cannot say itself. `callers` maps a request id being served to the
    user whose rights its file inputs get (the control socket reads it)."""

    def __init__(self, runner: Runner, timeout: Optional[float], callers: dict[str, Optional[str]]) -> None:
        self._runner, self._timeout, self._callers = runner, timeout, callers

    async def __call__(self, scope: dict, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: dict, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        if body and headers.get(b"content-type", b"").startswith(b"application/json"):
            try:
                parse_json(bytes(body))
            except BodyError as error:
                await error.response()(scope, receive, send)
                return
        request_id = (headers.get(b"x-request-id") or b"").decode()
        if not request_id or request_id in self._callers:  # in-flight ids are unique: each names its caller's rights
            request_id = uuid.uuid4().hex
        path = quote(relative_path(scope), safe="/:@!$&'()*+,;=~")
        query = scope.get("query_string", b"").decode("latin-1")
        status, answer_headers, chunks = await self.call(
            scope["method"], path + (f"?{query}" if query else ""), bytes(body),
            [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP], request_id, CALLER.get(),
        )
        answer_headers = [(k, v) for k, v in answer_headers if k != OUTPUT_LINES_HEADER]  # the queue's, not the caller's
        try:
            await send({"type": "http.response.start", "status": status, "headers": answer_headers})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:  # a caller that went away mid-answer: the runner's connection goes back now
            await chunks.aclose()

    async def call(self, method: str, target: str, body: bytes, headers: list[tuple[bytes, bytes]],
                   request_id: str, caller: Optional[str], from_queue: bool = False,
                   ) -> tuple[int, list[tuple[bytes, bytes]], Any]:
        """Send one request to the runner, `target` being its percent-encoded path and query:
        (status, headers, its body: an async iterator of chunks, to read or `aclose()`).
        The timeout covers the wait for the answer to start (all of a JSON answer).
        `from_queue`: a cancel (the queue's) while the runner works on it restarts the
        runner, as a timeout does, so that the work stops; a runner that stops under it
        raises RunnerLost (the queue runs it again), before its answer or during it, instead
        of answering 503 or cutting the answer off."""
        self._callers[request_id] = caller
        outgoing = [*headers, (REQUEST_ID.encode(), request_id.encode())]
        try:
            response = await self._send(method, target, body, outgoing)
        except asyncio.CancelledError:
            self._callers.pop(request_id, None)
            if from_queue and self._runner.alive():
                logger.warning("request %s was cancelled: restarting the runner so that its work stops", request_id)
                self._runner.recycle_soon(f"the runner was restarted after request {request_id} was cancelled")
            raise
        except asyncio.TimeoutError:
            self._callers.pop(request_id, None)
            reason = f"request {request_id} ran past request_timeout ({self._timeout:g}s)"
            logger.error("%s: restarting the runner so that its work stops", reason)
            self._runner.recycle_soon(f"the runner was restarted after {reason}")
            return self._canned(504, {"detail": f"Request timed out after {self._timeout:g} seconds"}, request_id)
        except aiohttp.ClientError:
            self._callers.pop(request_id, None)
            reason = await self._gone()
            if from_queue:
                raise RunnerLost(f"{reason} while serving this request") from None
            return self._canned(503, {"detail": f"{reason} while serving this request", "request_id": request_id}, request_id)
        answer_headers = [(k, v) for k, v in response.raw_headers if k.lower() not in (b"connection", b"keep-alive", b"transfer-encoding")]
        answer_headers.append((REQUEST_ID.encode(), request_id.encode()))
        body = _Body(response, lambda broke_off: self._answered(request_id, broke_off),
                     self._runner.exit_reason if from_queue else None)
        return response.status, answer_headers, body

    def _answered(self, request_id: str, broke_off: bool) -> None:
        self._callers.pop(request_id, None)
        if broke_off:
            logger.error("request %s: the runner's answer broke off (%s)", request_id, self._runner.exit_reason())

    async def _send(self, method: str, target: str, body: bytes,
                    headers: list[tuple[bytes, bytes]]) -> aiohttp.ClientResponse:
        """The runner's answer, within `request_timeout`; time spent waiting for a runner that
        is starting again (after a crash or a timeout) does not count against it."""
        url, text_headers = URL(RUNNER_URL + target, encoded=True), _text_headers(headers)
        for attempt in (1, 2):
            await self._runner.ready()
            try:
                return await asyncio.wait_for(self._send_once(method, url, body, text_headers), self._timeout)
            except aiohttp.ClientConnectorError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.05)  # the runner is being started again
        raise AssertionError("unreachable")

    async def _send_once(self, method: str, url: URL, body: bytes, headers: list[tuple[str, str]]) -> aiohttp.ClientResponse:
        """One request, and once more when a pooled connection was closed under it.

        A pooled connection the runner had closed (uvicorn closes one after an endpoint's
        unhandled error) as this request went out on it: nothing was answered, so it goes
        once more on a new connection. Unless the runner died meanwhile: then this request
        may be what killed it, and is not sent again."""

        def send() -> Any:
            return self._runner.client.request(method, url, data=body or None, headers=headers, allow_redirects=False)

        try:
            return await send()
        except aiohttp.ClientConnectorError:
            raise
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)
            if not self._runner.alive():
                raise
            try:
                return await send()
            except aiohttp.ClientConnectorError as error:
                raise aiohttp.ServerDisconnectedError(str(error)) from error

    async def _gone(self) -> str:
        for _ in range(20):
            reason = self._runner.exit_reason()
            if reason != "the runner stopped answering":
                return reason
            await asyncio.sleep(0.05)
        return self._runner.exit_reason()

    @staticmethod
    def _canned(status: int, body: Any, request_id: str = "") -> tuple[int, list[tuple[bytes, bytes]], Any]:
        status, headers, data = _json_answer(status, body)
        if request_id:
            headers.append((REQUEST_ID.encode(), request_id.encode()))

        async def once() -> Any:
            yield data

        return status, headers, once()

    async def _websocket(self, scope: dict, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        await receive()  # websocket.connect
        await self._runner.ready()
        path = relative_path(scope)
        query = scope.get("query_string", b"").decode()
        request_id = uuid.uuid4().hex
        self._callers[request_id] = CALLER.get()
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in _WS_SKIP]
        headers.append((REQUEST_ID, request_id))
        try:
            upstream = await unix_connect(
                sock=await self._runner.connect(), uri="ws://runner" + path + (f"?{query}" if query else ""),
                additional_headers=headers, subprotocols=scope.get("subprotocols") or None, max_size=None,
                compression=None, open_timeout=self._timeout,
            )
        except (websockets.InvalidStatus, websockets.InvalidHandshake, OSError) as error:
            self._callers.pop(request_id, None)
            logger.info("websocket %s refused by the app: %s", path, error)
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

        async def to_runner() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close(message.get("code", 1000))
                    return
                data = message.get("text") if message.get("text") is not None else message.get("bytes")
                if data is not None:
                    await upstream.send(data)

        async def from_runner() -> None:
            try:
                async for data in upstream:
                    key = "text" if isinstance(data, str) else "bytes"
                    await send({"type": "websocket.send", key: data})
            except websockets.ConnectionClosed:
                pass
            code = upstream.close_code or 1000
            await send({"type": "websocket.close", "code": code, "reason": upstream.close_reason or ""})

        tasks = [asyncio.ensure_future(to_runner()), asyncio.ensure_future(from_runner())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()
            self._callers.pop(request_id, None)
