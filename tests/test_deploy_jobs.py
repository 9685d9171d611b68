"""A deploy's events outlive the stream that reports them (no cluster: the control plane's
deploy bookkeeping, run on an event loop of its own)."""

from __future__ import annotations

import asyncio
import json
import threading

from tenantserve.platform.control import deploy_jobs
from tenantserve.platform.control.deploy_jobs import DeployJobs


async def _read(lines) -> list[dict]:
    return [json.loads(line) async for line in lines]


def test_a_follower_that_came_late_gets_the_rest_from_where_it_stopped() -> None:
    async def scenario() -> None:
        release = threading.Event()

        def work(progress):
            progress("building")
            release.wait(10)
            progress("starting")
            return {"event": "done", "url": "http://x/u/a"}

        job = DeployJobs().start("alice", {"event": "accepted", "app": "a"}, work)
        first = job.follow()
        accepted = json.loads(await first.__anext__())
        assert accepted["deploy_id"] == job.id and accepted["event"] == "accepted"
        await first.aclose()  # the client's stream ends here; the deploy goes on
        release.set()
        rest = await asyncio.wait_for(_read(job.follow(after=1)), 10)
        assert rest == [{"event": "progress", "line": "building"}, {"event": "progress", "line": "starting"},
                        {"event": "done", "url": "http://x/u/a"}]
        assert await _read(job.follow(after=4)) == []  # the deploy is over: nothing more to wait for

    asyncio.run(scenario())


def test_a_quiet_deploy_sends_heartbeats_and_finished_ones_are_forgotten_later(monkeypatch) -> None:
    monkeypatch.setattr(deploy_jobs, "HEARTBEAT_S", 0.05)

    async def scenario() -> None:
        release = threading.Event()
        jobs = DeployJobs()
        job = jobs.start("bob", {"event": "accepted"}, lambda progress: (release.wait(10), {"event": "failed",
                                                                                            "detail": "no"})[1])
        lines = job.follow(after=1)
        assert json.loads(await lines.__anext__()) == {"event": "heartbeat"}
        release.set()
        events = [e for e in await asyncio.wait_for(_read(lines), 10) if e["event"] != "heartbeat"]
        assert events == [{"event": "failed", "detail": "no"}]
        assert jobs.get(job.id) is job
        monkeypatch.setattr(deploy_jobs, "KEEP_S", 0)
        jobs.start("bob", {"event": "accepted"}, lambda progress: {"event": "done"})
        assert jobs.get(job.id) is None

    asyncio.run(scenario())
