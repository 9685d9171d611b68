"""Request bodies: size limits checked before a body is read, and JSON that can be stored
and read back.

Python's `json` accepts `NaN`, `Infinity` and numbers such as `1e400` (read as infinity),
which no JSON answer can carry back: a result holding one made every fetch of it fail.
It also recurses once per nesting level, so a 100,000-deep body raised instead of
answering. Bodies are parsed here strictly, and refused with fal's error shapes: 413 for
one over its limit, 422 for one that is not such JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional

from starlette.responses import JSONResponse

MAX_CALL_BYTES = 64 << 20  # a sync call to an app (larger inputs: upload them, pass the URL)
MAX_QUEUE_BYTES = 16 << 20  # a queued request's body, kept in the registry until it runs
MAX_UPLOAD_BYTES = 512 << 20
MAX_JSON_DEPTH = 200


class BodyError(Exception):
    """A body refused before it reached an endpoint; `response()` is fal's answer."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status_code, self.detail = status_code, detail

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status_code)


UPLOAD_HINT = ": upload large inputs with POST /files/upload and pass their URL instead"


def too_large(limit: int, hint: str = UPLOAD_HINT) -> BodyError:
    return BodyError(413, f"The request body is larger than the limit of {limit >> 20} MiB{hint}")


def declared_length(headers: Mapping[str, str]) -> Optional[int]:
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise BodyError(400, "Content-Length must be a number of bytes")
    return int(value)


async def limited(chunks: AsyncIterator[bytes], limit: int, declared: Optional[int],
                  hint: str = UPLOAD_HINT) -> AsyncIterator[bytes]:
    """The body's chunks, refused (413) as soon as it is known to pass `limit`: at once when
    its Content-Length says so, else when the bytes received do."""
    if declared is not None and declared > limit:
        raise too_large(limit, hint)
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit, hint)
        yield chunk


async def read_limited(chunks: AsyncIterator[bytes], limit: int, declared: Optional[int]) -> bytes:
    """The whole body, as `limited` lets it through."""
    return b"".join([chunk async for chunk in limited(chunks, limit, declared)])


def _invalid(message: str) -> BodyError:
    return BodyError(422, [{"loc": ["body"], "msg": f"Invalid JSON: {message}", "type": "json_invalid"}])


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check(value: Any) -> None:
    """No container deeper than MAX_JSON_DEPTH, no float beyond a float's range (`1e400`
    parses to infinity). One walk over the containers, at Python speed only for them."""
    pending = [(value, 1)] if isinstance(value, (dict, list)) else []
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} does not fit in a 64-bit float")
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
        for child in item.values() if isinstance(item, dict) else item:
            kind = type(child)
            if kind is dict or kind is list:
                pending.append((child, depth + 1))
            elif kind is float and not math.isfinite(child):
                raise ValueError("a number does not fit in a 64-bit float")


def loads(data: bytes | str) -> Any:
    """Strict JSON: no NaN or Infinity, no number beyond a float's range, at most
    MAX_JSON_DEPTH levels of nesting. Raises ValueError saying what is wrong."""
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValueError(error.msg) from None  # without json's "line 1 column 2 (char 1)"
    _check(value)
    return value


def parse_json(data: bytes) -> Any:
    """A request body as strict JSON, or the 422 that says why it is not."""
    try:
        return loads(data)
    except ValueError as error:
        raise _invalid(str(error)) from None


def dumps(value: Any) -> str:
    """JSON that `loads` reads back; ValueError for NaN or Infinity."""
    return json.dumps(value, allow_nan=False)


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: HTTP bodies over `limit` answer 413 before the app reads them. A
    body with a Content-Length is judged by it (the server delivers no more than it
    says); a chunked one is read here, up to the limit, and handed on whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []
                   if k in (b"content-length", b"transfer-encoding")}  # ASGI names are lowercase
        try:
            declared = declared_length(headers)
            if declared is not None and declared > self.limit:
                raise too_large(self.limit)
            if declared is None and "chunked" in headers.get("transfer-encoding", "").lower():
                body = await read_limited(_chunks(receive), self.limit, None)
                receive = _replay(body, receive)
        except BodyError as error:
            return await error.response()(scope, receive, send)
        await self.app(scope, receive, send)


async def _chunks(receive: Callable[[], Awaitable[dict]]) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then http.disconnect, as the server reports it

    return replay
