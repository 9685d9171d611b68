"""fal's queue API on the platform: submit, status (positions, logs), result, cancel,
timeouts, webhooks, SSE status, retries when a replica dies, and fairness between tenants."""

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Callable, Iterator

import pytest

from helpers import APPS, deployed, free_port, replica_pids, runner_pids


def _auth(keys: dict, user: str) -> dict:
    return {"authorization": f"Key {keys[user]}"}


def _until(read: Callable[[], dict], done: Callable[[dict], bool], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture(scope="module")
def worker(cli, http, keys) -> str:
    """rita's one-at-a-time app, private."""
    deployed(cli, f"{APPS}/queued.py::Worker", "--user", "rita", "--auth", "private")
    return "/queue/rita/worker"


def _submit(http, keys, path: str, payload: dict, user: str = "rita", **headers: str) -> dict:
    answer = http.post(path, json=payload, headers={**_auth(keys, user), **headers})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _status(http, keys, submitted: dict, user: str = "rita", logs: bool = False) -> dict:
    return http.get(submitted["status_url"] + ("?logs=1" if logs else ""), headers=_auth(keys, user)).json()


def test_requests_wait_their_turn_and_report_status_and_logs(http, keys, worker, base_url) -> None:
    first = _submit(http, keys, worker, {"label": "a", "seconds": 1.5})
    assert first["status_url"] == f"{base_url}/queue/rita/worker/requests/{first['request_id']}/status"
    second = _submit(http, keys, worker, {"label": "b", "seconds": 0.5})
    third = _submit(http, keys, worker, {"label": "c", "seconds": 0.5})

    assert _until(lambda: _status(http, keys, first), lambda s: s["status"] == "IN_PROGRESS")["status"] == "IN_PROGRESS"
    waiting = _status(http, keys, second)
    assert (waiting["status"], waiting["queue_position"]) == ("IN_QUEUE", 0)
    assert _status(http, keys, third)["queue_position"] == 1
    # Positions count down as the line moves.
    assert _until(lambda: _status(http, keys, third), lambda s: s.get("queue_position") == 0)["queue_position"] == 0

    done = _until(lambda: _status(http, keys, third, logs=True), lambda s: s["status"] == "COMPLETED")
    assert [line["message"] for line in done["logs"]] == ["working on c", "done with c"]
    assert done["metrics"]["inference_time"] > 0.4
    results = [http.get(r["response_url"], headers=_auth(keys, "rita")) for r in (first, second, third)]
    assert [r.json()["label"] for r in results] == ["a", "b", "c"]
    assert len({r.json()["pid"] for r in results}) == 1

    refused = _submit(http, keys, worker + "/refuse", {"label": "x"})
    status = _until(lambda: _status(http, keys, refused), lambda s: s["status"] == "COMPLETED")
    assert status["error"] == "cannot do x"
    answer = http.get(refused["response_url"], headers=_auth(keys, "rita"))
    assert answer.status_code == 400 and answer.json() == {"detail": "cannot do x"}


def test_queue_keeps_each_users_requests_to_themselves(http, keys, worker) -> None:
    assert http.post(worker, json={"label": "x"}).status_code == 401
    assert http.post(worker, json={"label": "x"}, headers=_auth(keys, "sam")).status_code == 403
    mine = _submit(http, keys, worker, {"label": "mine"})
    assert http.get(mine["status_url"], headers=_auth(keys, "sam")).status_code == 404
    assert http.get(mine["response_url"]).status_code == 404
    assert http.put(mine["cancel_url"], headers=_auth(keys, "sam")).status_code == 404
    assert http.post("/queue/rita/no-such-app", json={}, headers=_auth(keys, "rita")).status_code == 404


def _result(http, keys, submitted: dict, user: str = "rita") -> dict:
    _until(lambda: _status(http, keys, submitted, user), lambda s: s["status"] == "COMPLETED")
    return http.get(submitted["response_url"], headers=_auth(keys, user)).json()


def test_cancel_queued_and_running_requests_and_time_out(http, keys, worker) -> None:
    runner_before = _result(http, keys, _submit(http, keys, worker, {"label": "first"}))["pid"]
    running = _submit(http, keys, worker, {"label": "long", "seconds": 2})
    queued = _submit(http, keys, worker, {"label": "never", "seconds": 0})
    _until(lambda: _status(http, keys, running), lambda s: s["status"] == "IN_PROGRESS")

    assert http.put(queued["cancel_url"], headers=_auth(keys, "rita")).json() == {"status": "CANCELLATION_REQUESTED"}
    assert http.get(queued["response_url"], headers=_auth(keys, "rita")).status_code == 499
    # fal's rule for a running request: an endpoint that cannot be stopped finishes, and its result stands.
    cancelled = http.put(running["cancel_url"], headers=_auth(keys, "rita"))
    assert cancelled.status_code == 202
    status = _until(lambda: _status(http, keys, running), lambda s: s["status"] == "COMPLETED", timeout=15)
    assert "error" not in status
    assert _result(http, keys, running)["label"] == "long"
    assert http.put(running["cancel_url"], headers=_auth(keys, "rita")).json() == {"status": "ALREADY_COMPLETED"}
    # An endpoint with a /cancel sibling is told, with the request's x-fal-request-id, and stops: 499.
    stoppable = _submit(http, keys, worker + "/stoppable", {"label": "stop-me", "seconds": 60})
    _until(lambda: _status(http, keys, stoppable), lambda s: s["status"] == "IN_PROGRESS")
    assert http.put(stoppable["cancel_url"], headers=_auth(keys, "rita")).status_code == 202
    status = _until(lambda: _status(http, keys, stoppable, logs=True), lambda s: s["status"] == "COMPLETED",
                    timeout=15)
    assert status["error"] == "Request cancelled"
    assert "stopped stop-me" in [line["message"] for line in status["logs"]]
    assert http.get(stoppable["response_url"], headers=_auth(keys, "rita")).status_code == 499
    assert _result(http, keys, _submit(http, keys, worker, {"label": "after"}))["pid"] == runner_before  # no restart

    # fal's X-Fal-Request-Timeout is a start deadline: a request still waiting when it
    # passes ends with 504; one that started runs to its end.
    busy = _submit(http, keys, worker, {"label": "busy", "seconds": 3})
    started_in_time = _submit(http, keys, worker, {"label": "quick"}, **{"x-fal-request-timeout": "60"})
    too_late = _submit(http, keys, worker, {"label": "late"}, **{"x-fal-request-timeout": "0.5"})
    status = _until(lambda: _status(http, keys, too_late), lambda s: s["status"] == "COMPLETED", timeout=20)
    assert "did not start within 0.5 seconds" in status["error"]
    assert _status(http, keys, busy)["status"] == "IN_PROGRESS"
    timed_out = http.get(too_late["response_url"], headers=_auth(keys, "rita"))
    assert timed_out.status_code == 504 and timed_out.headers["x-fal-request-timeout-type"] == "user"
    _until(lambda: _status(http, keys, started_in_time), lambda s: s["status"] == "COMPLETED", timeout=20)
    assert http.get(started_in_time["response_url"], headers=_auth(keys, "rita")).json()["label"] == "quick"


def test_private_logs_are_shown_to_the_apps_owner_only(cli, http, keys) -> None:
    deployed(cli, f"{APPS}/queued.py::QuietWorker", "--user", "rita", "--auth", "shared")
    theirs = _submit(http, keys, "/queue/rita/quiet-worker", {"label": "bobs"}, user="bob")
    mine = _submit(http, keys, "/queue/rita/quiet-worker", {"label": "ritas"})
    assert _result(http, keys, theirs, user="bob")["label"] == "bobs"
    assert _result(http, keys, mine)["label"] == "ritas"
    assert not _status(http, keys, theirs, user="bob", logs=True)["logs"]
    assert [line["message"] for line in _status(http, keys, mine, logs=True)["logs"]] == ["working on ritas",
                                                                                         "done with ritas"]


def test_request_start_timeout_is_the_owners_default_start_deadline(cli, http, keys) -> None:
    deployed(cli, f"{APPS}/queued.py::OwnersDeadline", "--user", "rita", "--auth", "shared")
    path = "/queue/rita/owners-deadline"
    busy = _submit(http, keys, path, {"label": "busy", "seconds": 4})
    _until(lambda: _status(http, keys, busy), lambda s: s["status"] == "IN_PROGRESS")
    bobs = _submit(http, keys, path, {"label": "bobs"}, user="bob")  # not the owner: no default deadline
    ritas = _submit(http, keys, path, {"label": "ritas"})
    patient = _submit(http, keys, path, {"label": "patient"}, **{"x-fal-request-timeout": "60"})  # the header wins
    status = _until(lambda: _status(http, keys, ritas), lambda s: s["status"] == "COMPLETED", timeout=20)
    assert "did not start within 1 seconds" in status["error"]
    assert _result(http, keys, bobs, user="bob")["label"] == "bobs"
    assert _result(http, keys, patient)["label"] == "patient"


def test_status_streams_as_server_sent_events(http, keys, worker) -> None:
    submitted = _submit(http, keys, worker, {"label": "streamed", "seconds": 0.5})
    events = []
    with http.stream("GET", submitted["status_url"] + "/stream?logs=1", headers=_auth(keys, "rita")) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "COMPLETED" and events[-1]["logs"][0]["message"] == "working on streamed"
    assert "IN_PROGRESS" in [e["status"] for e in events]


class _Receiver:
    """A webhook receiver on 127.0.0.1 that answers `status` and records what it got."""

    def __init__(self, status: int) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def receivers() -> Iterator[Callable[[int], _Receiver]]:
    made: list[_Receiver] = []
    yield lambda status: made.append(_Receiver(status)) or made[-1]
    for receiver in made:
        receiver.server.shutdown()


def test_webhooks_are_delivered_and_a_failing_one_is_given_up(http, keys, worker, receivers) -> None:
    good, bad = receivers(200), receivers(500)
    ok = _submit(http, keys, f"{worker}?fal_webhook={good.url}", {"label": "hooked"})
    failing = _submit(http, keys, f"{worker}/refuse?fal_webhook={bad.url}", {"label": "nope"})
    _until(lambda: {"n": len(good.received)}, lambda s: s["n"] >= 1)
    assert good.received == [{"request_id": ok["request_id"], "gateway_request_id": ok["request_id"], "status": "OK",
                              "payload": {"label": "hooked", "pid": good.received[0]["payload"]["pid"]},
                              "error": None}]
    # While the failing receiver is retried, the queue goes on.
    later = _submit(http, keys, worker, {"label": "after"})
    assert _until(lambda: _status(http, keys, later), lambda s: s["status"] == "COMPLETED")["status"] == "COMPLETED"
    assert 1 <= len(bad.received) < 5
    _until(lambda: {"n": len(bad.received)}, lambda s: s["n"] >= 5, timeout=40)
    time.sleep(2)
    assert len(bad.received) == 5  # five tries with backoff, then given up
    assert bad.received[0] == {"request_id": failing["request_id"], "gateway_request_id": failing["request_id"],
                               "status": "ERROR", "payload": None, "error": "cannot do nope"}


def test_request_survives_its_replica_being_killed(http, keys, worker) -> None:
    pid = http.post("/rita/worker/", json={"label": "pid"}, headers=_auth(keys, "rita")).json()["pid"]
    submitted = _submit(http, keys, worker, {"label": "survivor", "seconds": 3})
    _until(lambda: _status(http, keys, submitted), lambda s: s["status"] == "IN_PROGRESS")
    time.sleep(0.5)
    for replica in replica_pids("rita.worker"):  # the replica's process; its runner dies with it
        os.kill(replica, signal.SIGKILL)
    status = _until(lambda: _status(http, keys, submitted), lambda s: s["status"] == "COMPLETED", timeout=90)
    assert status["status"] == "COMPLETED" and "error" not in status
    answer = http.get(submitted["response_url"], headers=_auth(keys, "rita")).json()
    assert answer["label"] == "survivor" and answer["pid"] != pid

    # A caller may ask for no retry (fal's x-fal-no-retry): the death is then its answer.
    once = _submit(http, keys, worker, {"label": "once", "seconds": 3}, **{"x-fal-no-retry": "1"})
    _until(lambda: _status(http, keys, once), lambda s: s["status"] == "IN_PROGRESS")
    time.sleep(0.5)
    for replica in replica_pids("rita.worker"):
        os.kill(replica, signal.SIGKILL)
    failed = _until(lambda: _status(http, keys, once), lambda s: s["status"] == "COMPLETED", timeout=60)
    assert "replica died" in failed["error"]
    assert http.get(once["response_url"], headers=_auth(keys, "rita")).status_code == 500


def test_request_survives_its_runner_dying_under_it(http, keys, worker) -> None:
    """The app's runner (killed, out of memory, crashed) dies mid-request: the replica starts it
    again and the queue runs the request again, where a sync caller would get a 503."""
    pid = http.post("/rita/worker/", json={"label": "pid"}, headers=_auth(keys, "rita")).json()["pid"]
    submitted = _submit(http, keys, worker, {"label": "outlived its runner", "seconds": 3})
    _until(lambda: _status(http, keys, submitted), lambda s: s["status"] == "IN_PROGRESS")
    time.sleep(0.5)
    runners = runner_pids("rita.worker")
    assert runners
    for runner in runners:
        os.kill(runner, signal.SIGKILL)
    status = _until(lambda: _status(http, keys, submitted), lambda s: s["status"] == "COMPLETED", timeout=90)
    assert status["status"] == "COMPLETED" and "error" not in status, status
    answer = http.get(submitted["response_url"], headers=_auth(keys, "rita")).json()
    assert answer["label"] == "outlived its runner" and answer["pid"] != pid


def test_one_tenants_flood_does_not_starve_another(cli, http, keys, worker) -> None:
    deployed(cli, f"{APPS}/queued.py::Worker", "--user", "sam", "--auth", "private")
    flood = [_submit(http, keys, worker, {"label": f"flood-{i}", "seconds": 0.5}) for i in range(12)]
    started = time.monotonic()
    other = _submit(http, keys, "/queue/sam/worker", {"label": "sams"}, user="sam")
    done = _until(lambda: _status(http, keys, other, user="sam"), lambda s: s["status"] == "COMPLETED")
    assert done["status"] == "COMPLETED" and time.monotonic() - started < 5
    assert _status(http, keys, flood[-1])["status"] == "IN_QUEUE"  # rita's flood is still waiting
    last = _until(lambda: _status(http, keys, flood[-1]), lambda s: s["status"] == "COMPLETED", timeout=60)
    assert last["status"] == "COMPLETED"


def test_bad_submissions_and_a_deleted_app_end_cleanly(cli, http, keys, worker) -> None:
    bad_hook = http.post(f"{worker}?fal_webhook=file:///etc/passwd", json={"label": "x"}, headers=_auth(keys, "rita"))
    assert bad_hook.status_code == 422
    deployed(cli, f"{APPS}/streaming.py::Talker", "--user", "rita", "--app-name", "talker", "--auth", "private")
    streamed = _submit(http, keys, "/queue/rita/talker/stream", {"text": "a b"})
    status = _until(lambda: _status(http, keys, streamed), lambda s: s["status"] == "COMPLETED")
    assert "streams its answer" in status["error"]

    deployed(cli, f"{APPS}/queued.py::Worker", "--user", "rita", "--app-name", "doomed", "--auth", "private")
    busy = _submit(http, keys, "/queue/rita/doomed", {"label": "busy", "seconds": 2})
    stranded = _submit(http, keys, "/queue/rita/doomed", {"label": "stranded"})
    _until(lambda: _status(http, keys, busy), lambda s: s["status"] == "IN_PROGRESS")
    assert cli("apps", "delete", "doomed", "--user", "rita").exit_code == 0
    ended = _until(lambda: _status(http, keys, stranded), lambda s: s["status"] == "COMPLETED", timeout=60)
    assert ended["status"] == "COMPLETED" and ended["error"]
    assert _until(lambda: _status(http, keys, busy), lambda s: s["status"] == "COMPLETED")["status"] == "COMPLETED"


def test_finished_requests_expire_from_the_registry(tmp_path) -> None:
    from tenantserve.platform.core.outcomes import CallOutcome
    from tenantserve.platform.store.registry import Registry
    from tenantserve.platform.store.request_queue import RequestQueue

    queue = RequestQueue(Registry(f"sqlite:///{tmp_path}/registry.db"))
    done = queue.submit("rita", "worker", "/", {"label": "old"}, caller="rita")
    waiting = queue.submit("rita", "worker", "/", {"label": "waiting"}, caller="rita")
    assert [r.id for r in queue.claim("rita", "worker", 1)] == [done.id]
    queue.finish(done.id, CallOutcome(200, {"label": "old"}))
    assert queue.expire(older_than_s=3600) == 0  # still fresh
    time.sleep(0.05)
    assert queue.expire(older_than_s=0.01) == 1
    assert queue.get(done.id) is None and queue.get(waiting.id).status == "IN_QUEUE"  # only finished ones go


def test_every_spelling_fals_clients_use_answers(http, keys, worker) -> None:
    """fal's SDK client (`fal.apps`) asks for `.../status/` and `.../requests/<id>/`."""
    submitted = _submit(http, keys, worker, {"label": "slashes"})
    for url in (submitted["status_url"], submitted["status_url"] + "/"):
        assert http.get(url, headers=_auth(keys, "rita")).status_code in (200, 202)
    _until(lambda: _status(http, keys, submitted), lambda s: s["status"] == "COMPLETED")
    for url in (submitted["response_url"], submitted["response_url"] + "/"):
        assert http.get(url, headers=_auth(keys, "rita")).json()["label"] == "slashes"
    late = http.put(submitted["cancel_url"] + "/", headers=_auth(keys, "rita"))
    assert late.status_code == 400 and late.json() == {"status": "ALREADY_COMPLETED"}
