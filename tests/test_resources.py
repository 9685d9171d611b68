"""Machine types, requirements and scaling map onto Ray's resources and autoscaler."""

import concurrent.futures
import os
import time

import ray

from tenantserve.platform.cluster import environments

from helpers import APPS, deployed


def test_gpu_app_lands_on_the_a100_node(cli, http) -> None:
    deployed(cli, f"{APPS}/gpu.py::GpuApp", "--user", "ivan")
    placement = http.post("/ivan/gpu-app/").json()
    assert placement["gpu_ids"] == [0]
    assert placement["cuda_visible_devices"] == "0"
    a100_nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("accelerator_type:A100")]
    assert placement["node_id"] in a100_nodes


def test_unplaceable_machine_type_fails_fast(cli, http) -> None:
    started = time.monotonic()
    result = cli("deploy", f"{APPS}/gpu.py::H100App", "--user", "ivan", "--auth", "public")
    assert result.exit_code == 1
    assert "accelerator_type:H100" in result.output and "GPU-H200" in result.output
    assert time.monotonic() - started < 30
    assert http.post("/ivan/h100-app/").status_code == 404


def test_requirements_get_their_own_environment(cli, http) -> None:
    result = deployed(cli, f"{APPS}/requirements_app.py::WhereHumanized", "--user", "judy")
    # The user watches uv build it, in the platform's own folder of environments.
    assert "+ humanize==4.9.0" in result.output and "environment built in" in result.output
    assert http.post("/judy/where-humanized/", json={"size": 3000000}).json() == {"text": "3.0 MB"}
    where = http.post("/judy/where-humanized/where").json()
    folder = environments.root() / environments.key(["humanize==4.9.0"])
    assert where["prefix"] == str(folder) and where["humanize"].startswith(str(folder))
    deployed(cli, f"{APPS}/requirements_app.py::NoHumanize", "--user", "judy")
    assert http.post("/judy/no-humanize/").json() == {"text": "absent"}
    # The same list again reuses the environment.
    result = deployed(cli, f"{APPS}/requirements_app.py::Humanized", "--user", "judy")
    assert "reusing" in result.output and "+ humanize" not in result.output
    assert http.post("/judy/humanized/", json={"size": 1000}).json() == {"text": "1.0 kB"}


def test_a_requirement_that_cannot_install_keeps_the_app_serving(cli, http) -> None:
    deployed(cli, f"{APPS}/requirements_app.py::Humanized", "--user", "judy", "--app-name", "humanized-kept")
    result = cli("deploy", f"{APPS}/requirements_app.py::BrokenRequirements", "--user", "judy",
                 "--app-name", "humanized-kept")
    assert result.exit_code == 1
    assert "cannot build the environment" in result.output and "tenantserve-no-such-package" in result.output
    assert http.post("/judy/humanized-kept/", json={"size": 1000}).json() == {"text": "1.0 kB"}


def test_scales_to_zero_after_keep_alive_and_back(cli, http) -> None:
    deployed(cli, f"{APPS}/scale_to_zero.py::Sleepy", "--user", "kim")
    first = http.post("/kim/sleepy/", json={}).json()["pid"]

    def running_replicas() -> int:
        app = ray.serve.status().applications["kim.sleepy"]
        return sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())

    deadline = time.monotonic() + 60
    while (running_replicas() > 0 or os.path.exists(f"/proc/{first}")) and time.monotonic() < deadline:
        time.sleep(0.5)
    # Gone, process and all: a stopping replica still finishes what HAProxy sends it while
    # HAProxy's table catches up, so only then must the next request start a new one.
    assert running_replicas() == 0 and not os.path.exists(f"/proc/{first}"), "replica still running well after keep_alive"

    started = time.monotonic()
    again = http.post("/kim/sleepy/", json={})
    assert again.status_code == 200 and again.json()["pid"] != first
    assert time.monotonic() - started < 30


def test_requests_beyond_capacity_wait_instead_of_failing(cli, http) -> None:
    deployed(cli, f"{APPS}/scale_to_zero.py::Sleepy", "--user", "kim", "--app-name", "narrow")
    # max_concurrency=1 and max_multiplexing=1: one request at a time, the rest queue.
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: http.post("/kim/narrow/", json={"seconds": 0.3}), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert len({a.json()["pid"] for a in answers}) == 1


def test_an_idle_app_scales_up_under_sustained_load(cli, http) -> None:
    deployed(cli, f"{APPS}/scale_to_zero.py::Steady", "--user", "kim")
    # Idle long enough for its handles to go quiet and the controller to leave it at rest.
    time.sleep(6)
    until = time.monotonic() + 8

    def client(_: int) -> list[int]:
        pids = []
        while time.monotonic() < until:
            answer = http.post("/kim/steady/", json={"seconds": 0.5})
            assert answer.status_code == 200, answer.text
            pids.append(answer.json()["pid"])
        return pids

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        served_by = [pid for pids in pool.map(client, range(6)) for pid in pids]
    assert len(set(served_by)) == 2, "a second replica did not start under load"
