"""The registry is the source of truth: after `platform down` and `platform up` every
registered app serves again at its current revision, with nobody redeploying it, and every
queued request (the one that was running too) runs to completion.

This test runs a second, private platform (its own state directory, Ray temp dir and
ports) so that stopping it leaves the session's cluster alone."""

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from helpers import APPS, free_port, platform_cmd

pytestmark = pytest.mark.cluster  # it starts platforms of its own


@pytest.mark.timeout(600)  # two starts of a platform, four deploys (one builds an environment), a stop
def test_apps_come_back_after_a_cluster_restart(tmp_path, cluster, monkeypatch) -> None:
    # Restored by pytest whatever ends the test (a timeout included): later tests use the session's platform.
    monkeypatch.setenv("TENANTSERVE_HOME", str(tmp_path / "home"))
    ports = [f"--port={free_port()}", f"--http-port={free_port()}", f"--dashboard-port={free_port()}"]
    # As on a fresh machine: a user with no Ray token yet (no ~/.ray/auth_token).
    fresh_user = {"HOME": str(tmp_path / "fresh-user")}
    try:
        platform_cmd("up", *ports, env=fresh_user)
        assert (tmp_path / "fresh-user" / ".ray" / "auth_token").exists()
        base = json.loads((tmp_path / "home" / "cluster.json").read_text())["http_url"]
        platform_cmd("deploy", f"{APPS}/versioned.py::Versioned", "--auth", "public", env=fresh_user)
        platform_cmd("deploy", f"{APPS}/async_setup.py::AsyncLoader", "--auth", "public", env=fresh_user)
        platform_cmd("deploy", f"{APPS}/queued.py::Worker", "--auth", "public", env=fresh_user)
        platform_cmd("deploy", f"{APPS}/requirements_app.py::WhereHumanized", "--auth", "public", env=fresh_user)
        ready = next((tmp_path / "home" / "envs").glob("*/.tenantserve-ready"))
        built_at = ready.stat().st_mtime_ns
        user = platform_cmd("apps", "list", env=fresh_user).stdout.split("/versioned")[0].split()[-1]
        assert httpx.post(f"{base}/{user}/versioned/").json()["version"] == "v1"
        # Queued work outlives the platform: one request running, two waiting when it stops.
        queued = [httpx.post(f"{base}/queue/{user}/worker", json={"label": f"q{i}", "seconds": 2}).json()
                  for i in range(3)]
        deadline = time.monotonic() + 30
        while httpx.get(queued[0]["status_url"]).json()["status"] != "IN_PROGRESS" and time.monotonic() < deadline:
            time.sleep(0.1)

        platform_cmd("down", env=fresh_user)
        assert not (tmp_path / "home" / "cluster.json").exists()
        # The session's cluster is untouched by that `down`.
        status = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "status", f"--address={cluster['address']}"],
            capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "token"},
        )
        assert status.returncode == 0, status.stderr
        assert httpx.get(f"{cluster['http_url']}/-/healthz", timeout=10).status_code in (200, 503)

        platform_cmd("up", *ports, env=fresh_user)
        assert httpx.post(f"{base}/{user}/versioned/", timeout=30).json() == {"version": "v1", "calls": 1}
        assert httpx.post(f"{base}/{user}/async-loader/", timeout=30).json()["model"] == "loaded asynchronously"
        # The app's environment outlives the Ray cluster: used again, not rebuilt.
        where = httpx.post(f"{base}/{user}/where-humanized/where", timeout=30).json()
        assert where["prefix"] == str(ready.parent) and ready.stat().st_mtime_ns == built_at
        for request in queued:
            deadline = time.monotonic() + 60
            while httpx.get(request["status_url"]).json()["status"] != "COMPLETED" and time.monotonic() < deadline:
                time.sleep(0.2)
        assert [httpx.get(r["response_url"]).json()["label"] for r in queued] == ["q0", "q1", "q2"]
    finally:
        platform_cmd("down", check=False, env=fresh_user)
