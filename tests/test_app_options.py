"""fal options that place or keep an app's replicas, on the session's cluster (its node is
in region `local`): concurrency_buffer, regions and data_mounts."""

import threading
import time

import ray

from helpers import APPS, deployed, wait_until


def _running(app: str) -> int:
    statuses = ray.serve.status().applications
    return sum(d.replica_states.get("RUNNING", 0) for d in statuses[app].deployments.values())


def test_concurrency_buffer_keeps_a_warm_replica_above_the_load(cli, http) -> None:
    deployed(cli, f"{APPS}/placed.py::Buffered", "--user", "vera")
    time.sleep(4)  # keep_alive is 1 s: without the buffer the app would be at zero by now
    assert _running("vera.buffered") == 1
    busy = threading.Thread(target=lambda: http.post("/vera/buffered/", json={"seconds": 8}, timeout=60))
    busy.start()
    try:
        wait_until(lambda: _running("vera.buffered") == 2, "a warm replica added above the busy one", timeout=60,
                   every=0.25)
    finally:
        busy.join()
    wait_until(lambda: _running("vera.buffered") == 1, "the extra replica gone with the load", timeout=60, every=0.25)
    cli("apps", "delete", "buffered", "--user", "vera")  # it would keep its warm replica for the whole session


def test_regions_place_replicas_on_the_nodes_of_those_regions(cli, http) -> None:
    deployed(cli, f"{APPS}/placed.py::Regional", "--user", "vera")
    assert http.post("/vera/regional/", json={}).json() == {"region": "local"}
    refused = cli("deploy", f"{APPS}/placed.py::Elsewhere", "--user", "vera", "--auth", "public")
    assert refused.exit_code != 0
    assert "no node of this cluster is in region elsewhere (its nodes' regions: local)" in refused.output


def test_data_mounts_show_the_runner_only_those_parts_of_data(cli, http) -> None:
    deployed(cli, f"{APPS}/placed.py::CacheOnly", "--user", "vera")
    seen = http.post("/vera/cache-only/", json={}).json()
    assert seen == {"data": [".cache"], "cache": ["mine"], "wrote_outside": False,
                    "hf_home": "/data/.cache/huggingface"}
