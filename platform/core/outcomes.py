"""What crosses between the platform's processes about a request (over Serve handles): a
queued call's outcome, from the app's replica to the queue's dispatcher and the request
queue, and the admission of a request to an app at zero replicas, from the queue service
to Serve's proxy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# How many times the queue runs a request whose runner or replica dies under it, unless
# its app says otherwise (fal's retry_config / skip_retry_conditions) or its caller does.
QUEUE_ATTEMPTS = 3

class RunnerLost(RuntimeError):
    """The app's runner stopped (it crashed, or was killed) while it served a queued request:
    the queue runs the request again while it has attempts left, as when the replica dies."""


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


@dataclass(frozen=True)
class Admission:
    """Whether a request may wake an app at zero replicas: `passes`, or the answer to give
    it instead (the app's refusal, or for its health check the registered revision's health)."""

    passes: bool
    status_code: int = 200
    body: Any = None

    @classmethod
    def let_through(cls) -> Admission:
        return cls(True)

    @classmethod
    def answer(cls, status_code: int, body: Any) -> Admission:
        return cls(False, status_code, body)
