"""Per-request logs: what an endpoint prints or logs while it serves one request, kept for
the queue's `status?logs=1` as fal reports them. They still reach the replica's log file.

A context variable marks the request being served; asyncio tasks and `asyncio.to_thread`
carry it, so concurrent requests on one replica keep their logs apart. Serve turns a
replica's `print` into records of its `ray.serve` logger (with RAY_SERVE_LOG_TO_STDERR=0,
as the platform runs it), so a handler on that logger sees them; where Serve leaves
stdout alone, a tee on stdout and stderr does.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Iterator, Optional, TextIO

_current: ContextVar[Optional[list[dict[str, Any]]]] = ContextVar("tenantserve_request_logs", default=None)


def _entry(message: str, level: str) -> dict[str, Any]:
    return {"message": message, "level": level, "source": "user", "timestamp": datetime.now(timezone.utc).isoformat()}


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        logs = _current.get()
        message = record.getMessage().rstrip("\n")
        if logs is not None and message.strip():
            logs.append(_entry(message, record.levelname))


class _Tee:
    def __init__(self, stream: TextIO, level: str) -> None:
        self._stream, self._level = stream, level

    def write(self, text: str) -> int:
        logs = _current.get()
        if logs is not None and text.strip():
            logs.append(_entry(text.rstrip("\n"), self._level))
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install() -> None:
    """Capture in this process from now on (once)."""
    serve_logger = logging.getLogger("ray.serve")
    if not any(isinstance(handler, _Handler) for handler in serve_logger.handlers):
        serve_logger.addHandler(_Handler())
    if type(sys.stdout).__name__ == "StreamToLogger":  # Serve already sends stdout to its logger
        return
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout, "INFO")  # type: ignore[assignment]
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr, "STDERR")  # type: ignore[assignment]


@contextlib.contextmanager
def request_logs() -> Iterator[list[dict[str, Any]]]:
    logs: list[dict[str, Any]] = []
    token = _current.set(logs)
    try:
        yield logs
    finally:
        _current.reset(token)
