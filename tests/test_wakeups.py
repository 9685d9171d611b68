"""Requests the platform refuses wake nothing: an app at zero replicas stays at zero under
anonymous and wrong-key calls, its health is answered without a replica, and the owner's
call still wakes it."""

import time

from helpers import APPS, deployed, running_replicas, wait_until


def test_refused_requests_leave_a_private_app_at_zero(cli, http, keys) -> None:
    deployed(cli, f"{APPS}/scale_to_zero.py::Sleepy", "--user", "petra", "--auth", "private")
    wait_until(lambda: running_replicas("petra.sleepy") == 0, "petra/sleepy to scale to zero", timeout=60)
    version = http.get("/petra/sleepy/health")
    assert version.status_code == 200 and version.json()["status"] == "ok" and version.json()["version"]
    counts = []
    for _ in range(15):
        assert http.post("/petra/sleepy/", json={}).status_code == 401
        assert http.post("/petra/sleepy/", json={}, headers={"Authorization": f"Key {keys['bob']}"}).status_code == 403
        assert http.get("/petra/sleepy/openapi.json").status_code == 401
        assert http.get("/petra/sleepy/docs").status_code == 401
        assert http.get("/petra/sleepy/health").json()["version"] == version.json()["version"]
        time.sleep(1)
        counts.append(running_replicas("petra.sleepy"))
    assert counts == [0] * 15, counts
    owner = http.post("/petra/sleepy/", json={}, headers={"Authorization": f"Key {keys['petra']}"})
    assert owner.status_code == 200 and owner.json()["pid"] > 0


def test_refused_requests_do_not_keep_a_replica_warm(cli, http, keys) -> None:
    deployed(cli, f"{APPS}/scale_to_zero.py::Sleepy", "--user", "petra", "--app-name", "warm-refusals",
             "--auth", "private")
    assert http.post("/petra/warm-refusals/", json={}, headers={"Authorization": f"Key {keys['petra']}"}).status_code == 200
    # keep_alive is 2 s: refused calls every second, to the running replica and then to the
    # app at zero, must not hold it up.
    deadline, counts = time.monotonic() + 30, []
    while time.monotonic() < deadline and (not counts or counts[-1] != 0):
        assert http.post("/petra/warm-refusals/", json={}).status_code == 401
        time.sleep(1)
        counts.append(running_replicas("petra.warm-refusals"))
    assert counts[-1] == 0, counts
    for _ in range(5):
        assert http.post("/petra/warm-refusals/", json={}).status_code == 401
        time.sleep(1)
        assert running_replicas("petra.warm-refusals") == 0
