"""The runner's stdout and stderr as JSON lines tagged with the request being served, so
the replica keeps each request's logs apart (the queue's `logs`) and writes every line to
its own log file. The request comes from fal's `x-fal-request-id` header, which the
replica sets on every call."""

from __future__ import annotations

import json
import sys
import threading
import traceback
from contextvars import ContextVar
from typing import Any, Callable, Optional, TextIO

REQUEST_ID_HEADER = b"x-fal-request-id"
# On each answer: how many lines the request had written when its answer started, so
# that the replica knows when it has read all of them (the queue keeps them with the result).
OUTPUT_LINES_HEADER = b"x-tenantserve-output-lines"
current_request: ContextVar[Optional[str]] = ContextVar("tenantserve_runner_request", default=None)
FAL_TRACEBACK = '{"traceback"'
# Per call: whether fal's error handler has printed its traceback (a list, so that the
# endpoint's threads, which run in a copy of the call's context, mark the same one).
_traced: ContextVar[Optional[list[bool]]] = ContextVar("tenantserve_runner_traced", default=None)


class TaggedLines:
    """A text stream that writes each complete line as `{"r": request id, "s": stream, "m": text}`."""

    written: dict[str, int] = {}  # request id -> complete lines written, both streams together
    _lock = threading.Lock()  # one for both streams: they share the pipe and `written`

    def __init__(self, raw: TextIO, stream: str) -> None:
        self._raw, self._stream = raw, stream
        self._pending: dict[Optional[str], str] = {}

    def write(self, text: str) -> int:
        request = current_request.get()
        with self._lock:
            buffered = self._pending.pop(request, "") + text
            *lines, rest = buffered.split("\n")
            if rest:
                self._pending[request] = rest
            for line in lines:
                traced = _traced.get()
                if traced is not None and line.startswith(FAL_TRACEBACK):
                    traced.append(True)
                self._raw.write(json.dumps({"r": request, "s": self._stream, "m": line}) + "\n")
            if lines:
                self._raw.flush()
                if request is not None:
                    self.written[request] = self.written.get(request, 0) + len(lines)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            for request, rest in self._pending.items():
                self._raw.write(json.dumps({"r": request, "s": self._stream, "m": rest}) + "\n")
                if request is not None:
                    self.written[request] = self.written.get(request, 0) + 1
            self._pending.clear()
            self._raw.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._raw.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def install() -> None:
    sys.stdout = TaggedLines(sys.__stdout__, "stdout")  # type: ignore[assignment]
    sys.stderr = TaggedLines(sys.__stderr__, "stderr")  # type: ignore[assignment]


def tag_requests(app: Callable[..., Any]) -> Callable[..., Any]:
    """ASGI middleware: the request id of each call, for the lines it prints.

    An endpoint's unhandled error is answered and printed (tagged) by fal's error handler,
    and then raised again by Starlette for the server to log: uvicorn would print the same
    traceback a second time, untagged. Here it stops once answered: printed here, tagged,
    unless fal's handler has printed it; raised on when no answer has started."""

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await app(scope, receive, send)
        request = next((v.decode() for k, v in scope.get("headers", []) if k == REQUEST_ID_HEADER), None)
        token, traced = current_request.set(request), _traced.set([])
        started = False

        async def watched(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and request is not None:
                lines = str(TaggedLines.written.get(request, 0)).encode()
                message = {**message, "headers": [*message.get("headers", ()), (OUTPUT_LINES_HEADER, lines)]}
            started = started or message["type"] == "http.response.start"  # a websocket's error closes it 1011
            await send(message)

        try:
            await app(scope, receive, watched)
        except Exception:
            if not started:
                raise
            if not _traced.get():
                traceback.print_exc()
        finally:
            _traced.reset(traced)
            current_request.reset(token)
            TaggedLines.written.pop(request or "", None)

    return asgi
