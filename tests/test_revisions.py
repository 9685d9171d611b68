"""Every deploy is a revision; roll back to one, or rescale a running app in place."""

import re
import threading
import time

import httpx
import ray
from test_deploy_failures import _versioned

from tenantserve.platform.cluster.ray_cluster import DRAINING_PERIOD_S

from helpers import APPS


def test_rollback_to_an_earlier_revision(cli, http, tmp_path) -> None:
    for version in ("v1", "v2"):
        assert cli("deploy", _versioned(tmp_path, version), "--auth", "public", as_user="judy").exit_code == 0
    assert http.post("/judy/versioned/").json()["version"] == "v2"

    listing = cli("apps", "list-rev", "versioned", as_user="judy").output
    revisions = re.findall(r"\b[0-9a-f]{12}\b", listing)
    assert len(revisions) == 2 and re.search(rf"\*\s+.?\s*{revisions[1]}", listing)

    rolled = cli("apps", "set-rev", "versioned", revisions[0][:6], as_user="judy")
    assert rolled.exit_code == 0, rolled.output
    assert http.post("/judy/versioned/").json()["version"] == "v1"
    assert cli("apps", "set-rev", "versioned", "ffffff", as_user="judy").exit_code == 1
    assert "bob cannot act as judy" in cli("apps", "list-rev", "judy/versioned", as_user="bob").output


def test_scale_changes_live_bounds_without_restarting_replicas(cli, http, base_url) -> None:
    # keep_alive 60 s: the first replica cannot scale away while the test runs.
    assert cli("deploy", f"{APPS}/async_setup.py::AsyncLoader", "--auth", "public", "--app-name", "elastic",
               as_user="kim").exit_code == 0
    pid = http.post("/kim/elastic/").json()["pid"]

    scaled = cli("apps", "scale", "elastic", "--min-concurrency", "2", "--max-concurrency", "3",
                 "--keep-alive", "120", as_user="kim")
    assert scaled.exit_code == 0, scaled.output
    app = ray.serve.status().applications["kim.elastic"]
    deployment = next(iter(app.deployments.values()))
    assert deployment.replica_states.get("RUNNING", 0) >= 2
    # The replica that served before the change still serves. Each call on a connection of
    # its own: HAProxy reloads on the change, and a kept-alive connection may still be on
    # the process that took it before the new replica existed.
    pids = {httpx.post(f"{base_url}/kim/elastic/", timeout=30).json()["pid"] for _ in range(30)}
    assert pid in pids and len(pids) >= 2

    assert "2/3" in cli("apps", "list-rev", "elastic", as_user="kim").output
    assert cli("apps", "scale", "elastic", as_user="kim").exit_code == 1  # nothing to change


def test_redeploy_under_steady_load_drops_no_request(cli, http, tmp_path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    assert cli("deploy", _versioned(tmp_path / "v1", "v1"), "--auth", "public", "--app-name", "rolling",
               as_user="lena").exit_code == 0
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def steady_load() -> None:
        while not stop.is_set():
            try:
                response = http.post("/lena/rolling/")
                answers.append((response.status_code, response.json()["version"] if response.is_success else response.text))
            except (httpx.HTTPError, ValueError) as error:  # a dropped request is a failure, not a dead thread
                answers.append((0, repr(error)))

    workers = [threading.Thread(target=steady_load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        redeploy = cli("deploy", _versioned(tmp_path / "v2", "v2"), "--auth", "public", "--app-name", "rolling",
                       as_user="lena")
        assert redeploy.exit_code == 0, redeploy.output
        deployed_at = time.monotonic()
        # v1 drains while kept-alive connections on an old HAProxy process still reach it
        # (DRAINING_PERIOD_S after it leaves the table, longer when Serve stops it late):
        # the load goes on until its last 50 answers all came from v2.
        deadline = time.monotonic() + DRAINING_PERIOD_S + 150  # longer on a loaded machine
        def only_v2() -> bool:
            return len(answers) >= 50 and {a[1] for a in answers[-50:]} == {"v2"}

        while time.monotonic() < deadline and not only_v2():
            time.sleep(0.2)
        settled, settled_s = only_v2(), time.monotonic() - deployed_at
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    failures = [answer for answer in answers if answer[0] != 200]
    versions = [version for status, version in answers if status == 200]
    print(f"rolling redeploy under load: {len(answers)} requests, {len(failures)} failed, "
          f"{versions.count('v1')} answered by v1, {versions.count('v2')} by v2, only v2 {settled_s:.1f}s after the deploy returned")
    assert not failures, failures[:5]
    # Requests in flight when the load stops may still end on a draining v1 connection:
    # what counts is that 50 answers in a row came from v2 before the deadline.
    assert versions.count("v1") > 0 and versions.count("v2") > 0 and settled
