"""What an operator sees: per-tenant metrics in Prometheus format and `platform status`."""

import json
import re
import time

import httpx

from helpers import APPS, deployed


def _samples(metrics_url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _eventually(read, expected, timeout: float = 60):  # Ray exports metrics every 10 s
    deadline = time.monotonic() + timeout
    while (value := read()) < expected and time.monotonic() < deadline:
        time.sleep(1)
    return value


def test_prometheus_endpoint_counts_each_tenants_requests(cli, http, cluster) -> None:
    deployed(cli, f"{APPS}/chatty.py::Chatty", "--user", "lena", "--app-name", "metered")
    deployed(cli, f"{APPS}/chatty.py::Chatty", "--user", "quinn", "--app-name", "metered")
    for path in ("", "", "", "fail", "no-such-path"):
        http.post(f"/lena/metered/{path}")
    http.post("/quinn/metered/")
    metrics, app = cluster["metrics_url"], {"tenant": "lena", "app": "metered"}

    # Each series is exported on its own schedule: wait for each (a test run alone found them apart).
    for name, labels, expected in (("ray_tenantserve_requests_total", {"code": "200"}, 3),
                                   ("ray_tenantserve_requests_total", {"code": "500"}, 1),
                                   ("ray_tenantserve_request_errors_total", {"code": "404"}, 1),
                                   ("ray_tenantserve_request_duration_seconds_count", {}, 5)):
        read = lambda name=name, labels=labels: _samples(metrics, name, **labels, **app)  # noqa: E731
        assert _eventually(read, expected) == expected, (name, labels)
    assert _eventually(lambda: _samples(metrics, "ray_tenantserve_cold_starts_total", **app), 1) >= 1
    assert _eventually(lambda: _samples(metrics, "ray_tenantserve_cold_start_duration_seconds_count", **app), 1) >= 1
    # Ray drops a gauge's series when its worker misses two exports (a loaded machine): read it again.
    assert _eventually(lambda: _samples(metrics, "ray_tenantserve_replicas_running", **app), 1) >= 1
    # The same app name under another tenant is counted apart.
    assert _eventually(lambda: _samples(metrics, "ray_tenantserve_requests_total", tenant="quinn", app="metered"), 1) == 1

    http.post("/lena/metered/")
    assert _eventually(lambda: _samples(metrics, "ray_tenantserve_requests_total", code="200", **app), 4) == 4


def test_status_shows_nodes_gpus_and_where_apps_run(cli, http) -> None:
    deployed(cli, f"{APPS}/gpu.py::AlwaysOnGpu", "--user", "petra")
    try:
        result = cli("status", "--json", as_user="petra")
        assert result.exit_code == 0, result.output
        status = json.loads(result.output)
        head = next(node for node in status["nodes"] if node["head"])
        assert head["alive"] and head["total"]["GPU"] == 1 and head["total"]["accelerator_type:A100"] == 1
        assert head["free"]["GPU"] == 0 and head["free"]["CPU"] < head["total"]["CPU"]
        assert [f"{a['owner']}/{a['name']}" for a in status["apps"]] == ["petra/always-on-gpu"]  # only petra's
        app = status["apps"][0]
        assert app["status"] == "RUNNING" and app["replicas"] == {"RUNNING": 1} and app["nodes"] == [head["id"]]

        table = cli("status", as_user="petra").output
        assert "A100" in table and "petra/always-on-gpu" in table and "GPU-A100" in table
        assert "petra/always-on-gpu" in cli("status").output  # the admin sees every app
    finally:
        assert cli("apps", "delete", "petra/always-on-gpu").exit_code == 0  # give the one A100 back


def test_deploy_that_cannot_get_its_resources_says_what_it_waits_for(cli) -> None:
    started = time.monotonic()
    result = cli("deploy", f"{APPS}/gpu.py::TwoA100Replicas", "--user", "petra", "--auth", "public")
    assert result.exit_code == 1
    assert "waiting for free resources" in result.output and "GPU=1" in result.output
    assert time.monotonic() - started < 60
