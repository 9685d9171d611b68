"""The request queue in the registry database: fal's asynchronous API (submit, status,
result, cancel) is durable because each request is a row, not a task in some process.

States: IN_QUEUE -> IN_PROGRESS -> COMPLETED, or CANCELLED from the queue. A request that
was IN_PROGRESS when its replica or the dispatcher died goes back IN_QUEUE (keeping its place) until it has
used its attempts.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy import Column, Float, Integer, String, Table, Text, delete, func, insert, select, update

from tenantserve.platform.core.bodies import dumps
from tenantserve.platform.core.outcomes import CallOutcome
from tenantserve.platform.store.registry import Registry, metadata

IN_QUEUE, IN_PROGRESS, COMPLETED, CANCELLED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "CANCELLED"
MAX_ATTEMPTS = 3
START_TIMEOUT = "request_timeout"  # fal's error_type for a request that did not start in time

requests_table = Table(
    "queued_requests", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("owner", String(63), nullable=False),
    Column("app", String(63), nullable=False),
    Column("caller", String(63)),
    Column("path", String(512), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Float),
    Column("status_code", Integer),
    Column("result", Text),
    Column("logs", Text, nullable=False),
    Column("webhook_url", Text),
    Column("webhook_state", String(16)),
    Column("submitted_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
)


@dataclass
class QueuedRequest:
    id: str
    owner: str
    app: str
    caller: Optional[str]
    path: str
    payload: Any
    status: str
    attempts: int
    max_attempts: int
    timeout_s: Optional[float]
    status_code: Optional[int]
    result: Any
    logs: list[dict[str, Any]] = field(default_factory=list)
    webhook_url: Optional[str] = None
    webhook_state: Optional[str] = None
    submitted_at: float = 0.0
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    seq: int = 0

    @classmethod
    def from_row(cls, row: Any) -> "QueuedRequest":
        values = dict(row._mapping)
        values["payload"] = json.loads(values["payload"])
        values["result"] = json.loads(values["result"]) if values["result"] is not None else None
        values["logs"] = json.loads(values["logs"])
        return cls(**values)


class RequestQueue:
    def __init__(self, registry: Registry) -> None:
        self.engine = registry.engine

    def submit(self, owner: str, app: str, path: str, payload: Any, *, caller: Optional[str],
               timeout_s: Optional[float] = None, webhook_url: Optional[str] = None,
               retry: bool = True) -> QueuedRequest:
        request_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(insert(requests_table).values(
                id=request_id, owner=owner, app=app, caller=caller, path=path, payload=dumps(payload),
                status=IN_QUEUE, attempts=0, max_attempts=MAX_ATTEMPTS if retry else 1, timeout_s=timeout_s,
                logs="[]", webhook_url=webhook_url, webhook_state="pending" if webhook_url else None,
                submitted_at=time.time(),
            ))
        found = self.get(request_id)
        assert found is not None
        return found

    def get(self, request_id: str) -> Optional[QueuedRequest]:
        with self.engine.connect() as conn:
            row = conn.execute(select(requests_table).where(requests_table.c.id == request_id)).first()
        return QueuedRequest.from_row(row) if row else None

    def position(self, request: QueuedRequest) -> int:
        """How many requests to the same app are ahead of this queued one."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(requests_table).where(
                requests_table.c.owner == request.owner, requests_table.c.app == request.app,
                requests_table.c.status == IN_QUEUE, requests_table.c.seq < request.seq,
            )).scalar_one()

    def waiting_apps(self) -> list[tuple[str, str]]:
        """Apps with queued requests, the one whose oldest request waited longest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(requests_table.c.owner, requests_table.c.app, func.min(requests_table.c.seq).label("first"))
                .where(requests_table.c.status == IN_QUEUE)
                .group_by(requests_table.c.owner, requests_table.c.app).order_by("first")
            ).all()
        return [(row.owner, row.app) for row in rows]

    def start_next(self, owner: str, app: str) -> Optional[QueuedRequest]:
        """Move the app's oldest queued request to IN_PROGRESS and return it."""
        with self.engine.begin() as conn:
            row = conn.execute(select(requests_table).where(
                requests_table.c.owner == owner, requests_table.c.app == app, requests_table.c.status == IN_QUEUE,
            ).order_by(requests_table.c.seq).limit(1)).first()
            if row is None:
                return None
            started_at = time.time()
            taken = conn.execute(update(requests_table).where(
                requests_table.c.id == row.id, requests_table.c.status == IN_QUEUE,
            ).values(status=IN_PROGRESS, attempts=requests_table.c.attempts + 1, started_at=started_at))
            if taken.rowcount != 1:
                return None
        started = QueuedRequest.from_row(row)
        started.status, started.attempts, started.started_at = IN_PROGRESS, started.attempts + 1, started_at
        return started

    def finish(self, request_id: str, outcome: CallOutcome) -> None:
        """Record the outcome. One that JSON cannot carry back (NaN, Infinity) is stored
        as the 500 it would give a sync caller, so that every fetch of it answers."""
        status_code, result, logs = outcome.status_code, outcome.body, outcome.logs
        try:
            result_text = dumps(result)
        except (ValueError, TypeError, RecursionError):
            status_code = 500
            result_text = dumps({"detail": "The endpoint's answer is not valid JSON (NaN or Infinity in it)",
                                 "request_id": request_id})
        with self.engine.begin() as conn:
            conn.execute(update(requests_table).where(
                requests_table.c.id == request_id, requests_table.c.status == IN_PROGRESS,
            ).values(status=COMPLETED, status_code=status_code, result=result_text, logs=json.dumps(logs, default=str),
                     finished_at=time.time()))

    def expire_unstarted(self) -> list[str]:
        """Finish, with 504, the queued requests whose start deadline (fal's
        X-Fal-Request-Timeout: queue wait and retries, not processing) has passed."""
        now = time.time()
        late = (requests_table.c.status == IN_QUEUE) & requests_table.c.timeout_s.is_not(None) \
            & (requests_table.c.submitted_at + requests_table.c.timeout_s < now)
        with self.engine.begin() as conn:
            rows = conn.execute(select(requests_table.c.id, requests_table.c.timeout_s).where(late)).all()
            expired = []
            for row in rows:
                body = {"detail": f"Request timed out: it did not start within {row.timeout_s:g} seconds",
                        "error_type": START_TIMEOUT}
                if conn.execute(update(requests_table).where(requests_table.c.id == row.id, late).values(
                        status=COMPLETED, status_code=504, result=json.dumps(body), finished_at=now)).rowcount:
                    expired.append(row.id)
        return expired

    def requeue(self, request_id: str) -> None:
        """Back in line, at its old place: the app's replica died mid-request."""
        with self.engine.begin() as conn:
            conn.execute(update(requests_table).where(
                requests_table.c.id == request_id, requests_table.c.status == IN_PROGRESS,
            ).values(status=IN_QUEUE, started_at=None))

    def recover(self) -> int:
        """After a restart: requests that were running when the dispatcher stopped run again."""
        with self.engine.begin() as conn:
            return conn.execute(update(requests_table).where(requests_table.c.status == IN_PROGRESS)
                                .values(status=IN_QUEUE, started_at=None)).rowcount

    def cancel_queued(self, request_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(requests_table).where(
                requests_table.c.id == request_id, requests_table.c.status == IN_QUEUE,
            ).values(status=CANCELLED, finished_at=time.time())).rowcount == 1

    def set_webhook_state(self, request_id: str, state: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(requests_table).where(requests_table.c.id == request_id).values(webhook_state=state))

    def pending_webhooks(self) -> list[QueuedRequest]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(requests_table).where(
                requests_table.c.webhook_state == "pending",
                requests_table.c.status.in_((COMPLETED, CANCELLED)))).all()
        return [QueuedRequest.from_row(row) for row in rows]

    def expire(self, older_than_s: float) -> int:
        """Forget finished requests (and their results) older than `older_than_s`."""
        cutoff = time.time() - older_than_s
        with self.engine.begin() as conn:
            return conn.execute(delete(requests_table).where(
                requests_table.c.status.in_((COMPLETED, CANCELLED)), requests_table.c.finished_at < cutoff,
            )).rowcount
