"""The request queue's rows on each database (no cluster): order, batches, claims and their
leases, and two dispatchers sharing one queue."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid

from tenantserve.platform.core.batching import WriteBatch
from tenantserve.platform.core.outcomes import CallOutcome
from tenantserve.platform.store import request_queue
from tenantserve.platform.store.registry import Registry
from tenantserve.platform.store.request_queue import COMPLETED, IN_PROGRESS, IN_QUEUE, RequestQueue, Submission


def _owner() -> str:
    return f"u{uuid.uuid4().hex[:8]}"


def test_a_batch_of_submissions_keeps_order_and_reports_each_place(registry_url) -> None:
    queue, owner = RequestQueue(Registry(registry_url)), _owner()
    first = queue.submit(owner, "a", "/", {"n": 0}, caller=owner)
    placed = queue.submit_many([Submission(owner, "a", "/", {"n": n}, owner) for n in (1, 2)]
                               + [Submission(owner, "b", "/sub", [1, 2], None, timeout_s=5.0, webhook_url="http://h/",
                                             max_attempts=1)])
    assert [position for _, position in placed] == [1, 2, 0]
    other = placed[2][0]
    assert (other.path, other.payload, other.caller, other.timeout_s, other.max_attempts, other.webhook_state) \
        == ("/sub", [1, 2], None, 5.0, 1, "pending")
    assert queue.get(other.id) == other
    assert queue.position(placed[1][0]) == 2
    assert [key for key in queue.waiting_apps() if key[0] == owner] == [(owner, "a"), (owner, "b")]

    claimed = queue.claim(owner, "a", 2)
    assert [r.payload for r in claimed] == [{"n": 0}, {"n": 1}]
    assert all(r.status == IN_PROGRESS and r.attempts == 0 and r.dispatcher == queue.dispatcher for r in claimed)
    assert queue.get(first.id).status == IN_PROGRESS
    assert queue.position(placed[1][0]) == 2  # the two claimed ahead have not reached a replica
    queue.mark_started(first.id)
    queue.mark_started(claimed[1].id)
    assert queue.position(placed[1][0]) == 0
    assert queue.claim(owner, "a", 0) == []

    queue.finish_many([(claimed[0].id, CallOutcome(200, {"ok": True})), (claimed[1].id, CallOutcome(500, float("nan")))])
    done = queue.get(claimed[0].id)
    assert (done.status, done.status_code, done.result, done.lease_until) == (COMPLETED, 200, {"ok": True}, None)
    assert queue.get(claimed[1].id).status_code == 500  # NaN cannot travel as JSON: the sync caller's 500


def test_a_submission_with_a_free_slot_goes_in_claimed_unless_others_wait(registry_url) -> None:
    queue, owner = RequestQueue(Registry(registry_url)), _owner()
    [(direct, place)] = queue.submit_many([Submission(owner, "a", "/", 0, owner, claim=True)])
    assert (direct.status, direct.dispatcher, direct.attempts, place) == (IN_PROGRESS, queue.dispatcher, 0, 0)
    assert queue.claim(owner, "a", 5) == []  # nothing left in line
    placed = queue.submit_many([Submission(owner, "a", "/", n, owner, claim=n == 1) for n in (1, 2)]
                               + [Submission(owner, "a", "/", 3, owner, claim=True)])
    # Places count the claimed ones ahead that no replica has begun yet.
    assert [(r.status, place) for r, place in placed] == [(IN_PROGRESS, 0), (IN_QUEUE, 2), (IN_QUEUE, 3)]
    assert [r.payload for r in queue.claim(owner, "a", 5)] == [2, 3]  # none jumps the line


def test_a_requeued_request_keeps_its_place_and_a_cancelled_one_never_runs(registry_url) -> None:
    queue, owner = RequestQueue(Registry(registry_url)), _owner()
    first, second, third = (queue.submit(owner, "a", "/", n, caller=owner) for n in range(3))
    [running] = queue.claim(owner, "a", 1)
    assert queue.cancel_queued(second.id) and not queue.cancel_queued(running.id)
    assert queue.mark_started(running.id)
    assert not queue.requeue(running.id)  # its replica died: back in line, not ended
    assert [r.id for r in queue.claim(owner, "a", 5)] == [first.id, third.id]
    assert queue.get(first.id).attempts == 1  # the run its replica began; claims count none


def test_only_the_dispatcher_holding_a_claim_can_finish_or_requeue_it(registry_url) -> None:
    registry, owner = Registry(registry_url), _owner()
    mine, other = RequestQueue(registry), RequestQueue(registry)
    queued = mine.submit(owner, "a", "/", None, caller=owner)
    [claimed] = mine.claim(owner, "a", 1)
    assert other.finish(claimed.id, CallOutcome(200, "not yours")) is None
    other.requeue(claimed.id)
    assert mine.get(queued.id).status == IN_PROGRESS
    finished = mine.finish(claimed.id, CallOutcome(200, "done"))
    assert finished == mine.get(queued.id) and (finished.status, finished.result) == (COMPLETED, "done")


def test_a_dead_dispatchers_requests_go_back_in_line_when_its_lease_runs_out(registry_url, monkeypatch) -> None:
    registry, owner = Registry(registry_url), _owner()
    dead, alive = RequestQueue(registry), RequestQueue(registry)
    kept, lost = (alive.submit(owner, "a", "/", n, caller=owner) for n in range(2))
    assert [r.id for r in alive.claim(owner, "a", 1)] == [kept.id]
    monkeypatch.setattr(request_queue, "LEASE_S", -1.0)  # claims made now have run out already
    assert [r.id for r in dead.claim(owner, "a", 1)] == [lost.id]
    monkeypatch.setattr(request_queue, "LEASE_S", 10.0)
    assert alive.renew([kept.id]) == 1  # the living dispatcher's claim holds
    assert alive.renew([lost.id]) == 0  # not its claim
    assert dead.mark_started(lost.id)  # a replica began it, then its dispatcher went quiet
    reclaimed, ended = alive.reclaim_expired()
    assert reclaimed >= 1 and lost.id not in ended
    assert (alive.get(lost.id).status, alive.get(kept.id).status) == (IN_QUEUE, IN_PROGRESS)
    assert dead.finish(lost.id, CallOutcome(200, "too late")) is None  # it woke up: its claim is gone
    assert alive.get(lost.id).status == IN_QUEUE
    [again] = alive.claim(owner, "a", 1)
    assert (again.id, again.attempts) == (lost.id, 1)


def test_a_call_from_a_dispatcher_that_lost_its_claim_does_not_start_the_request(registry_url, monkeypatch) -> None:
    """A dispatcher stalls past its lease, another takes the request over: the stalled one's call,
    reaching a replica late, must not run it beside the new one's."""
    registry, owner = Registry(registry_url), _owner()
    stalled, taker = RequestQueue(registry), RequestQueue(registry)
    queued = taker.submit(owner, "a", "/", None, caller=owner)
    monkeypatch.setattr(request_queue, "LEASE_S", -1.0)
    stalled.claim(owner, "a", 1)
    monkeypatch.setattr(request_queue, "LEASE_S", 10.0)
    taker.reclaim_expired()
    [taken] = taker.claim(owner, "a", 1)
    assert taken.id == queued.id
    assert taker.mark_started_many([(queued.id, stalled.dispatcher)]) == [False]
    assert taker.mark_started(queued.id, taker.dispatcher)
    assert taker.finish(queued.id, CallOutcome(200, "ran once")).result == "ran once"


def test_a_claimed_request_is_in_queue_for_its_callers_until_a_replica_has_it(registry_url) -> None:
    queue, owner = RequestQueue(Registry(registry_url)), _owner()
    queued = queue.submit(owner, "a", "/", None, caller=owner)
    [claimed] = queue.claim(owner, "a", 1)
    assert (claimed.reported_status, queue.get(queued.id).reported_status) == (IN_QUEUE, IN_QUEUE)
    waiting = queue.submit(owner, "a", "/", None, caller=owner)
    assert RequestQueue(Registry(registry_url)).mark_started(queued.id)  # its replica, with a queue of its own
    started = queue.get(queued.id)
    assert started.reported_status == IN_PROGRESS and started.started_at is not None
    assert not queue.mark_started(queued.id)  # once
    assert not queue.mark_started(waiting.id)  # not claimed: nothing
    assert queue.get(waiting.id).reported_status == IN_QUEUE and queue.get(waiting.id).started_at is None


def test_a_cancel_of_a_running_request_is_recorded_for_its_replica(registry_url) -> None:
    queue, owner = RequestQueue(Registry(registry_url)), _owner()
    running, dying, unstarted = (queue.submit(owner, "a", "/", n, caller=owner) for n in range(3))
    assert not queue.request_cancel(running.id)  # still queued: cancel_queued is the way
    queue.claim(owner, "a", 3)
    queue.mark_started(running.id)
    assert not queue.cancel_unstarted(running.id)  # a replica has it: only the app can stop it
    assert queue.cancel_unstarted(unstarted.id) and queue.get(unstarted.id).status == request_queue.CANCELLED
    assert not queue.mark_started(unstarted.id)  # its replica does not run it
    assert queue.request_cancel(running.id) and queue.cancel_requested(running.id)
    assert not queue.cancel_requested(dying.id)
    assert queue.request_cancel(dying.id)
    assert queue.requeue(dying.id)  # its replica died after the cancel: it ends, and does not run again
    assert queue.get(dying.id).status == request_queue.CANCELLED
    queue.finish(running.id, CallOutcome(200, "finished anyway"))
    assert not queue.request_cancel(running.id)


def test_a_lapsed_claim_that_was_cancelled_or_used_its_attempts_ends(registry_url, monkeypatch) -> None:
    queue, owner = RequestQueue(Registry(registry_url)), _owner()
    cancelled = queue.submit(owner, "a", "/", 0, caller=owner)
    spent = queue.submit(owner, "a", "/", 1, caller=owner, max_attempts=1)
    never_began = queue.submit(owner, "a", "/", 2, caller=owner, max_attempts=1)
    monkeypatch.setattr(request_queue, "LEASE_S", -1.0)
    queue.claim(owner, "a", 3)
    assert queue.mark_started_many([(cancelled.id, None), (spent.id, None)]) == [True, True]
    assert queue.request_cancel(cancelled.id)
    _, ended_ids = queue.reclaim_expired()
    assert sorted(ended_ids) == sorted([cancelled.id, spent.id])  # their webhooks are due
    assert queue.get(cancelled.id).status == request_queue.CANCELLED
    ended = queue.get(spent.id)
    assert (ended.status, ended.status_code) == (COMPLETED, 500) and "dispatcher stopped" in ended.result["detail"]
    # A claim that lapsed before any replica began it (an app still waking) used no attempt.
    assert (queue.get(never_began.id).status, queue.get(never_began.id).attempts) == (IN_QUEUE, 0)


def test_an_unstarted_request_past_its_deadline_ends_with_504(registry_url) -> None:
    queue, owner = RequestQueue(Registry(registry_url)), _owner()
    late = queue.submit(owner, "a", "/", None, caller=owner, timeout_s=0.01)
    patient = queue.submit(owner, "a", "/", None, caller=owner)
    on_its_way, begun = (queue.submit(owner, "b", "/", n, caller=owner, timeout_s=0.01) for n in range(2))
    queue.claim(owner, "b", 2)  # claimed, but only one has reached a replica (the app still waking)
    assert queue.mark_started(begun.id)
    time.sleep(0.05)
    assert sorted(queue.expire_unstarted()) == sorted([late.id, on_its_way.id])
    for request_id in (late.id, on_its_way.id):
        ended = queue.get(request_id)
        assert (ended.status, ended.status_code, ended.result["error_type"]) == (COMPLETED, 504, "request_timeout")
    assert not queue.mark_started(on_its_way.id)  # the replica it reaches at last does not run it
    assert queue.get(patient.id).status == IN_QUEUE
    assert queue.get(begun.id).status == IN_PROGRESS  # the deadline is for starting: this one started


def test_two_dispatchers_on_postgresql_never_claim_one_request_twice(postgres_url) -> None:
    registry, owner = Registry(postgres_url), _owner()
    RequestQueue(registry).submit_many([Submission(owner, "a", "/", n, owner) for n in range(300)])
    taken: dict[str, list[str]] = {}

    def dispatch(queue: RequestQueue) -> None:
        while claimed := queue.claim(owner, "a", 7):
            taken.setdefault(queue.dispatcher, []).extend(r.id for r in claimed)
            queue.finish_many([(r.id, CallOutcome(200, r.payload)) for r in claimed])

    dispatchers = [RequestQueue(registry) for _ in range(2)]
    threads = [threading.Thread(target=dispatch, args=(queue,)) for queue in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ids = [request_id for claimed in taken.values() for request_id in claimed]
    assert len(ids) == len(set(ids)) == 300
    assert all(dispatchers[0].get(request_id).status == COMPLETED for request_id in ids[::29])


def test_dispatchers_on_postgresql_hear_each_others_new_requests(postgres_url) -> None:
    registry, owner = Registry(postgres_url), _owner()
    heard, stop = threading.Event(), threading.Event()
    listening = threading.Thread(target=RequestQueue(registry).listen, args=(heard.set, stop))
    listening.start()
    try:
        assert heard.wait(10)  # once on connecting: what was queued while no one listened
        heard.clear()
        RequestQueue(registry).submit(owner, "a", "/", None, caller=owner)
        assert heard.wait(10)
    finally:
        stop.set()
        listening.join(10)
    assert not listening.is_alive()


def test_concurrent_writes_go_in_one_batch_and_a_failure_reaches_each_caller() -> None:
    batches: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        batches.append(items)
        if -1 in items:
            raise RuntimeError("the database refused")
        return [item * 10 for item in items]

    async def main() -> None:
        batch = WriteBatch(write)
        assert await asyncio.gather(*(batch(n) for n in range(5))) == [0, 10, 20, 30, 40]
        assert batches == [[0, 1, 2, 3, 4]]
        failed = await asyncio.gather(batch(-1), batch(7), return_exceptions=True)
        assert all(isinstance(error, RuntimeError) for error in failed)
        assert await batch(8) == 80  # the next write goes on

    asyncio.run(main())



def test_a_dispatcher_keeps_what_it_finished_for_a_while_and_within_its_byte_budget(monkeypatch) -> None:
    """Fetching a result the dispatcher just recorded needs no registry read: the request as
    recorded is kept, for at most keep_s, and the oldest go first past the byte budget."""
    from tenantserve.platform.services import queue_server

    monkeypatch.setattr(queue_server, "RECENT_BYTES", 1600)
    recent = queue_server.RecentlyFinished(keep_s=0.5)

    def finished(n: int, size: int) -> request_queue.QueuedRequest:
        return request_queue.QueuedRequest(f"r{n}", "o", "a", None, "/", None, COMPLETED, 1, 3, None, 200, "x",
                                           stored_bytes=size)

    for n in range(3):
        recent.add(finished(n, 90))
    with_input = dataclasses.replace(finished(3, 10), payload={"image": "x" * 10_000})
    recent.add(with_input)  # its input (up to 16 MB) is not what a status or result reads: not kept
    assert recent.get("r3").payload is None and recent.get("r3").result == "x"
    recent.add(finished(9, 101))  # over a sixteenth of the budget: left to the registry
    assert [recent.get(f"r{n}") is not None for n in (0, 1, 2, 9)] == [True, True, True, False]
    for n in range(4, 18):
        recent.add(finished(n, 100))
    assert recent.get("r0") is None and recent.get("r17") is not None  # the oldest made room
    time.sleep(0.6)
    assert recent.get("r17") is None
