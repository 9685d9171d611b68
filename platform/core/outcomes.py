"""What a queued call came to, as the app's replica answers the queue's dispatcher (over a
Serve handle) and as the request queue records it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class CallOutcome:
    """The HTTP status and JSON body the request's caller gets, and the log lines the app
    wrote while serving it (fal's `logs` in the queue's status)."""

    status_code: int
    body: Any
    logs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def failed(cls, status_code: int, detail: str, request_id: Optional[str] = None) -> CallOutcome:
        """An outcome the platform decided (the app never answered): fal's error body."""
        body: dict[str, Any] = {"detail": detail}
        if request_id is not None:
            body["request_id"] = request_id
        return cls(status_code, body)
