"""Deploys that outlive the HTTP stream that started them.

A deploy runs in a thread of the control plane until it is done, whatever happens to the
stream that reports it: an HAProxy reload, a proxy restart or a laptop's dropped connection
ends the stream, not the deploy. Each deploy's events are kept, in order, for a while after
it ends, so a client that lost its stream asks for the rest
(`GET /api/v1/deploys/<id>?after=<events seen>`) and sees how it went.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, AsyncIterator, Callable, Optional

HEARTBEAT_S = 10  # a line this often while a deploy waits: proxies keep the stream open
KEEP_S = 900  # how long a finished deploy's events can still be read

Event = dict[str, Any]
Progress = Callable[[str], None]


def ndjson_line(event: Event) -> bytes:
    return (json.dumps(event) + "\n").encode()


class DeployJob:
    """One deploy's events: `accepted` (with the deploy's id), `progress` lines, then `done`
    or `failed`. Only the control plane's event loop adds to them."""

    def __init__(self, owner: str, accepted: Event) -> None:
        self.id = secrets.token_urlsafe(12)
        self.owner = owner
        self.events: list[Event] = [{**accepted, "deploy_id": self.id}]
        self.finished_at: Optional[float] = None
        self._changed = asyncio.Event()
        self._thread: Optional[asyncio.Future] = None

    def _add(self, event: Event) -> None:
        self.events.append(event)
        if event["event"] != "progress":
            self.finished_at = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, after: int = 0) -> AsyncIterator[bytes]:
        """NDJSON: the events from number `after` on, as they come, heartbeats between them,
        until the deploy's last event."""
        while True:
            changed = self._changed
            for event in self.events[after:]:
                yield ndjson_line(event)
            after = len(self.events)
            if self.finished_at is not None:
                return
            try:
                await asyncio.wait_for(changed.wait(), HEARTBEAT_S)
            except asyncio.TimeoutError:
                yield ndjson_line({"event": "heartbeat"})


class DeployJobs:
    """The control plane's deploys, running and recently finished, by id."""

    def __init__(self) -> None:
        self._jobs: dict[str, DeployJob] = {}

    def start(self, owner: str, accepted: Event, work: Callable[[Progress], Event]) -> DeployJob:
        """Run `work` in a thread; it reports progress lines and returns the last event
        (`done` or `failed`), which it never raises."""
        self._forget_finished()
        loop = asyncio.get_running_loop()
        job = DeployJob(owner, accepted)

        def progress(line: str) -> None:
            loop.call_soon_threadsafe(job._add, {"event": "progress", "line": line})

        def run() -> None:
            outcome = work(progress)
            loop.call_soon_threadsafe(job._add, outcome)

        job._thread = asyncio.ensure_future(asyncio.to_thread(run))
        self._jobs[job.id] = job
        return job

    def get(self, deploy_id: str) -> Optional[DeployJob]:
        return self._jobs.get(deploy_id)

    def _forget_finished(self) -> None:
        now = time.monotonic()
        for deploy_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > KEEP_S:
                del self._jobs[deploy_id]
