"""The request queue in the registry database: fal's asynchronous API (submit, status,
result, cancel) is durable because each request is a row, not a task in some process.

States: IN_QUEUE -> IN_PROGRESS -> COMPLETED, or CANCELLED from the queue. A dispatcher
claims requests in batches and holds each claim for LEASE_S, renewed while it lives: one
whose replica died goes back IN_QUEUE at once (keeping its place) until it has used its
attempts, one whose dispatcher died when its lease runs out. Several dispatchers can share
one queue: on PostgreSQL a claim skips the rows another dispatcher is claiming (`FOR UPDATE
SKIP LOCKED`), and only the holder of a claim can finish or requeue it, so no request runs
twice at the same time. Writes that arrive together go in one transaction (`submit_many`,
`finish_many`), which is what lets the queue keep up with sync calls.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    delete,
    false,
    func,
    insert,
    select,
    text,
    update,
)

from tenantserve.platform.core.bodies import dumps
from tenantserve.platform.core.outcomes import QUEUE_ATTEMPTS, CallOutcome
from tenantserve.platform.store.registry import Registry, metadata

IN_QUEUE, IN_PROGRESS, COMPLETED, CANCELLED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "CANCELLED"
START_TIMEOUT = "request_timeout"  # fal's error_type for a request that did not start in time
LEASE_S = 10.0  # how long a claim holds without its dispatcher renewing it
CHANNEL = "tenantserve_queue"  # PostgreSQL's NOTIFY channel: a request was queued or put back in line

logger = logging.getLogger(__name__)

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
    Column("dispatcher", String(36)),
    Column("lease_until", Float),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
)


_NOT_STARTED = (requests_table.c.status == IN_QUEUE) | (
    (requests_table.c.status == IN_PROGRESS) & requests_table.c.started_at.is_(None))

# The statements of every request's path, made once: building one costs about as much as
# running it on SQLite, and a statement object keeps its compiled form's cache key.
_BY_ID = select(requests_table).where(requests_table.c.id == bindparam("request_id"))
_BY_IDS = select(requests_table).where(requests_table.c.id.in_(bindparam("request_ids", expanding=True)))
_OF_APP = (requests_table.c.owner == bindparam("owner")) & (requests_table.c.app == bindparam("app"))
_COUNTS = {
    (queued_only, before): select(func.count()).select_from(requests_table).where(
        _OF_APP, requests_table.c.status == IN_QUEUE if queued_only else _NOT_STARTED,
        *([requests_table.c.seq < bindparam("before_seq")] if before else []))
    for queued_only in (False, True) for before in (False, True)
}
# A run counts against a request's attempts when it starts: a claim that lapsed (a dispatcher
# stopped, an app still waking) before any replica began it used none.
_START = update(requests_table).where(
    requests_table.c.id.in_(bindparam("request_ids", expanding=True)), requests_table.c.status == IN_PROGRESS,
    requests_table.c.started_at.is_(None),
).values(started_at=bindparam("now"), attempts=requests_table.c.attempts + 1).returning(requests_table.c.id)
_START_FROM = _START.where(requests_table.c.dispatcher == bindparam("sender"))


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
    dispatcher: Optional[str] = None
    lease_until: Optional[float] = None
    cancel_requested: bool = False
    stored_bytes: int = field(default=0, compare=False)  # of its result and logs, as stored

    @property
    def reported_status(self) -> str:
        """What fal's status API says: a claimed request no replica has yet is still IN_QUEUE."""
        return IN_QUEUE if self.status == IN_PROGRESS and self.started_at is None else self.status

    @classmethod
    def from_row(cls, row: Any) -> "QueuedRequest":
        values = dict(row._mapping)
        values["stored_bytes"] = len(values["result"] or "") + len(values["logs"])
        values["payload"] = json.loads(values["payload"])
        values["result"] = json.loads(values["result"]) if values["result"] is not None else None
        values["logs"] = json.loads(values["logs"])
        return cls(**values)


@dataclass(frozen=True)
class Submission:
    """One request as its caller submitted it."""

    owner: str
    app: str
    path: str
    payload: Any
    caller: Optional[str]
    timeout_s: Optional[float] = None
    webhook_url: Optional[str] = None
    max_attempts: int = QUEUE_ATTEMPTS  # runs of a request whose runner or replica dies under it
    # The submitting dispatcher has a free slot of the app for it: if nothing of the app's
    # is queued, the request goes in claimed by that dispatcher, skipping a claim's round trip.
    claim: bool = False


class RequestQueue:
    """The queue's rows; `dispatcher` names the claims this instance makes and may finish."""

    def __init__(self, registry: Registry, dispatcher: Optional[str] = None) -> None:
        self.engine = registry.engine
        self.dispatcher = dispatcher or uuid.uuid4().hex
        self._postgres = self._skip_locked = self.engine.dialect.name == "postgresql"
        oldest = select(requests_table).where(_OF_APP, requests_table.c.status == IN_QUEUE) \
            .order_by(requests_table.c.seq).limit(bindparam("limit"))
        self._oldest = oldest.with_for_update(skip_locked=True) if self._skip_locked else oldest
        self._take = update(requests_table).where(
            requests_table.c.id.in_(bindparam("request_ids", expanding=True)), requests_table.c.status == IN_QUEUE,
        ).values(status=IN_PROGRESS, dispatcher=self.dispatcher,
                 lease_until=bindparam("lease_until")).returning(requests_table.c.id)
        self._finish = update(requests_table).where(self._mine(bindparam("finished_id"))).values(
            status=COMPLETED, status_code=bindparam("finished_code"), result=bindparam("finished_result"),
            logs=bindparam("finished_logs"), finished_at=bindparam("finished_at"), lease_until=None)

    def _notify(self, conn: Any) -> None:
        """Tell every dispatcher listening (PostgreSQL) that the line changed, at commit."""
        if self._postgres:
            conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})

    def listen(self, heard: Callable[[], None], stop: threading.Event) -> None:
        """Call `heard` whenever any dispatcher queues a request or puts one back (LISTEN on
        PostgreSQL), until `stop` is set; a dropped connection is made again. Returns at once
        on SQLite, which has no such channel (and one dispatcher)."""
        if not self._postgres:
            return
        import psycopg

        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    heard()  # what was queued while no one listened
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            heard()
            except Exception as error:
                logger.warning("listening for queued requests failed (%s); trying again", error)
                stop.wait(1.0)

    def submit(self, owner: str, app: str, path: str, payload: Any, *, caller: Optional[str],
               timeout_s: Optional[float] = None, webhook_url: Optional[str] = None,
               max_attempts: int = QUEUE_ATTEMPTS) -> QueuedRequest:
        [(queued, _)] = self.submit_many([Submission(owner, app, path, payload, caller, timeout_s, webhook_url,
                                                     max_attempts)])
        return queued

    def submit_many(self, submissions: Sequence[Submission]) -> list[tuple[QueuedRequest, int]]:
        """Queue every submission in one transaction; each with its place in its app's line
        (a claimed one, see `Submission.claim`, comes back IN_PROGRESS, at place 0)."""
        now = time.time()
        with self.engine.begin() as conn:
            keys = {(s.owner, s.app) for s in submissions}
            ahead = {key: self._waiting(conn, *key) for key in keys}
            queued = {key: self._waiting(conn, *key, queued_only=True) for key in keys}
            rows = []
            for s in submissions:
                key = (s.owner, s.app)
                claimed = s.claim and queued[key] == 0
                queued[key] += 0 if claimed else 1
                rows.append(dict(
                    id=str(uuid.uuid4()), owner=s.owner, app=s.app, caller=s.caller, path=s.path,
                    payload=dumps(s.payload), status=IN_PROGRESS if claimed else IN_QUEUE, attempts=0,
                    max_attempts=s.max_attempts, timeout_s=s.timeout_s, logs="[]",
                    webhook_url=s.webhook_url, webhook_state="pending" if s.webhook_url else None, submitted_at=now,
                    dispatcher=self.dispatcher if claimed else None, lease_until=now + LEASE_S if claimed else None,
                ))
            inserted = conn.execute(insert(requests_table).returning(requests_table.c.seq, sort_by_parameter_order=True),
                                    rows).scalars().all()
            if any(row["status"] == IN_QUEUE for row in rows):
                self._notify(conn)
        placed = []
        for row, seq in zip(rows, inserted):
            key = (row["owner"], row["app"])
            request = QueuedRequest(**{**row, "payload": json.loads(row["payload"]), "result": None, "logs": [],
                                       "status_code": None, "seq": seq})
            placed.append((request, 0 if request.status == IN_PROGRESS else ahead[key]))
            ahead[key] += 1
        return placed

    @staticmethod
    def _waiting(conn: Any, owner: str, app: str, before_seq: Optional[int] = None, queued_only: bool = False) -> int:
        """The app's requests no replica has begun (queued, or claimed on their way)."""
        query = _COUNTS[(queued_only, before_seq is not None)]
        return conn.execute(query, {"owner": owner, "app": app, "before_seq": before_seq}).scalar_one()

    def get(self, request_id: str) -> Optional[QueuedRequest]:
        with self.engine.connect() as conn:
            row = conn.execute(_BY_ID, {"request_id": request_id}).first()
        return QueuedRequest.from_row(row) if row else None

    def position(self, request: QueuedRequest) -> int:
        """How many requests to the same app no replica has begun are ahead of this one."""
        with self.engine.connect() as conn:
            return self._waiting(conn, request.owner, request.app, before_seq=request.seq)

    def waiting_apps(self) -> list[tuple[str, str]]:
        """Apps with queued requests, the one whose oldest request waited longest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(requests_table.c.owner, requests_table.c.app, func.min(requests_table.c.seq).label("first"))
                .where(requests_table.c.status == IN_QUEUE)
                .group_by(requests_table.c.owner, requests_table.c.app).order_by("first")
            ).all()
        return [(row.owner, row.app) for row in rows]

    def claim(self, owner: str, app: str, limit: int) -> list[QueuedRequest]:
        """Move up to `limit` of the app's oldest queued requests to IN_PROGRESS under this
        dispatcher's lease, in one transaction, and return them. They start (`started_at`,
        and IN_PROGRESS for fal's clients) when a replica takes them: `mark_started`."""
        if limit <= 0:
            return []
        now = time.time()
        with self.engine.begin() as conn:
            rows = conn.execute(self._oldest, {"owner": owner, "app": app, "limit": limit}).all()
            if not rows:
                return []
            taken = set(conn.execute(self._take, {"request_ids": [row.id for row in rows],
                                                  "lease_until": now + LEASE_S}).scalars())
        claimed = []
        for row in rows:
            if row.id in taken:
                request = QueuedRequest.from_row(row)
                request.status = IN_PROGRESS
                request.dispatcher, request.lease_until = self.dispatcher, now + LEASE_S
                claimed.append(request)
        return claimed

    def mark_started(self, request_id: str, dispatcher: Optional[str] = None) -> bool:
        [started] = self.mark_started_many([(request_id, dispatcher)])
        return started

    def mark_started_many(self, starts: Sequence[tuple[str, Optional[str]]]) -> list[bool]:
        """The replica a dispatcher handed these requests to begins them, in one transaction;
        each is (request id, the dispatcher that sent it; None: whichever holds it). For each,
        True if it is still to run: not cancelled or past its start deadline before it
        started, and claimed by that dispatcher (a call from one whose lease lapsed, and
        whose request another dispatcher runs now, does not run it a second time)."""
        by_dispatcher: dict[Optional[str], list[str]] = {}
        for request_id, dispatcher in starts:
            by_dispatcher.setdefault(dispatcher, []).append(request_id)
        started: set[str] = set()
        now = time.time()
        with self.engine.begin() as conn:
            for dispatcher, request_ids in by_dispatcher.items():
                # (not a parameter named "dispatcher": an UPDATE would set that column from it)
                statement, values = (_START, {}) if dispatcher is None else (_START_FROM, {"sender": dispatcher})
                started.update(conn.execute(statement, {"request_ids": request_ids, "now": now, **values}).scalars())
        return [request_id in started for request_id, _ in starts]

    def request_cancel(self, request_id: str) -> bool:
        """Ask the replica running a request to cancel it (fal's cancel of a running request:
        an app that can stop it answers 499, any other finishes it)."""
        with self.engine.begin() as conn:
            return conn.execute(update(requests_table).where(
                requests_table.c.id == request_id, requests_table.c.status == IN_PROGRESS,
            ).values(cancel_requested=True)).rowcount == 1

    def cancel_requested(self, request_id: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(requests_table.c.cancel_requested)
                                     .where(requests_table.c.id == request_id)).scalar())

    def _mine(self, request_id: Any) -> Any:
        """The row of a request this dispatcher holds the claim of."""
        return (requests_table.c.id == request_id) & (requests_table.c.status == IN_PROGRESS) \
            & (requests_table.c.dispatcher == self.dispatcher)

    def finish(self, request_id: str, outcome: CallOutcome) -> Optional[QueuedRequest]:
        [finished] = self.finish_many([(request_id, outcome)])
        return finished

    def finish_many(self, outcomes: Sequence[tuple[str, CallOutcome]]) -> list[Optional[QueuedRequest]]:
        """Record outcomes, in one transaction; each request as recorded, or None where this
        dispatcher had lost its claim (its lease ran out and the request went back in line:
        nothing is recorded). An outcome that JSON cannot carry back (NaN, Infinity) is
        stored as the 500 it would give a sync caller, so that every fetch of it answers."""
        if not outcomes:
            return []
        now, rows = time.time(), []
        for request_id, outcome in outcomes:
            status_code, result = outcome.status_code, outcome.body
            try:
                result_text = dumps(result)
            except (ValueError, TypeError, RecursionError):
                status_code = 500
                result_text = dumps({"detail": "The endpoint's answer is not valid JSON (NaN or Infinity in it)",
                                     "request_id": request_id})
            rows.append({"finished_id": request_id, "finished_code": status_code, "finished_result": result_text,
                         "finished_logs": json.dumps(outcome.logs, default=str), "finished_at": now})
        with self.engine.begin() as conn:
            conn.execute(self._finish, rows)
            stored = {row.id: row for row in conn.execute(_BY_IDS, {"request_ids": [r for r, _ in outcomes]})}
        recorded = []
        for request_id, _ in outcomes:
            row = stored.get(request_id)
            mine = row is not None and (row.status, row.dispatcher, row.finished_at) == (COMPLETED, self.dispatcher, now)
            recorded.append(QueuedRequest.from_row(row) if mine else None)
        return recorded

    def expire_unstarted(self) -> list[str]:
        """Finish, with 504, the requests no replica has begun (queued, or claimed and on
        their way: an app still waking, a replica that cannot be placed) whose start deadline
        (fal's X-Fal-Request-Timeout: queue wait and retries, not processing) has passed."""
        now = time.time()
        late = _NOT_STARTED & requests_table.c.timeout_s.is_not(None) \
            & (requests_table.c.submitted_at + requests_table.c.timeout_s < now)
        with self.engine.begin() as conn:
            rows = conn.execute(select(requests_table.c.id, requests_table.c.timeout_s).where(late)).all()
            expired = []
            for row in rows:
                body = {"detail": f"Request timed out: it did not start within {row.timeout_s:g} seconds",
                        "error_type": START_TIMEOUT}
                if conn.execute(update(requests_table).where(requests_table.c.id == row.id, late).values(
                        status=COMPLETED, status_code=504, result=json.dumps(body), finished_at=now,
                        lease_until=None)).rowcount:
                    expired.append(row.id)
        return expired

    def requeue(self, request_id: str) -> bool:
        """Back in line, at its old place: the app's replica died mid-request (a request
        its caller asked to cancel meanwhile ends CANCELLED instead: True then)."""
        with self.engine.begin() as conn:
            ended = conn.execute(update(requests_table).where(self._mine(request_id), requests_table.c.cancel_requested)
                                 .values(status=CANCELLED, finished_at=time.time(), lease_until=None)).rowcount == 1
            if conn.execute(update(requests_table).where(self._mine(request_id))
                            .values(status=IN_QUEUE, started_at=None, dispatcher=None, lease_until=None)).rowcount:
                self._notify(conn)
        return ended

    def renew(self, request_ids: Sequence[str]) -> int:
        """Extend the lease of the requests this dispatcher runs (a claim it holds but no
        longer runs, after a failure, is left to lapse and run again); call it well within LEASE_S."""
        if not request_ids:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(update(requests_table).where(
                requests_table.c.id.in_(request_ids), requests_table.c.status == IN_PROGRESS,
                requests_table.c.dispatcher == self.dispatcher,
            ).values(lease_until=time.time() + LEASE_S)).rowcount

    def reclaim_expired(self) -> tuple[int, list[str]]:
        """Requests whose dispatcher stopped renewing their lease (it died, or its platform
        was stopped) go back in line, keeping their place; one its caller cancelled meanwhile
        ends CANCELLED, one that has used its attempts ends with 500. How many went back,
        and the ids of those that ended (their webhooks are due)."""
        now = time.time()
        lapsed = (requests_table.c.status == IN_PROGRESS) & (
            requests_table.c.lease_until.is_(None) | (requests_table.c.lease_until < now))
        spent = dumps({"detail": "The queue's dispatcher stopped while this request ran, in each of its attempts"})
        with self.engine.begin() as conn:
            ended = list(conn.execute(update(requests_table).where(lapsed, requests_table.c.cancel_requested)
                                      .values(status=CANCELLED, finished_at=now, lease_until=None)
                                      .returning(requests_table.c.id)).scalars())
            ended += conn.execute(update(requests_table).where(
                lapsed, requests_table.c.attempts >= requests_table.c.max_attempts,
            ).values(status=COMPLETED, status_code=500, result=spent, finished_at=now, lease_until=None)
                .returning(requests_table.c.id)).scalars()
            reclaimed = conn.execute(update(requests_table).where(lapsed).values(
                status=IN_QUEUE, started_at=None, dispatcher=None, lease_until=None)).rowcount
            if reclaimed:
                self._notify(conn)
            return reclaimed, ended

    def cancel_unstarted(self, request_id: str) -> bool:
        """Cancel a claimed request that no replica has begun (its dispatcher then drops it)."""
        with self.engine.begin() as conn:
            return conn.execute(update(requests_table).where(
                requests_table.c.id == request_id, requests_table.c.status == IN_PROGRESS,
                requests_table.c.started_at.is_(None),
            ).values(status=CANCELLED, finished_at=time.time(), lease_until=None)).rowcount == 1

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
