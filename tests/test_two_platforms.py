"""Two platforms on one machine keep to their own ports: each answers its own apps, at zero
replicas too (the cold-start path through Serve's fallback proxy), and `down` leaves none
of its Ray processes listening."""

import json

import httpx
import pytest

from helpers import APPS, free_port, platform_cmd, wait_until

pytestmark = pytest.mark.cluster  # it starts platforms of its own


def test_two_platforms_each_answer_their_own_apps_at_zero(tmp_path, cluster, cli, http, keys) -> None:
    from tenantserve.platform.cluster.ray_cluster import _cluster_processes

    deploy = cli("deploy", f"{APPS}/scale_to_zero.py::Sleepy", "--user", "lena", "--app-name", "first-zero",
                 "--auth", "private")
    assert deploy.exit_code == 0, deploy.output
    home = tmp_path / "second"
    env = {"TENANTSERVE_HOME": str(home)}
    ports = [f"--port={free_port()}", f"--http-port={free_port()}", f"--dashboard-port={free_port()}"]
    try:
        platform_cmd("up", *ports, env=env)
        second = json.loads((home / "cluster.json").read_text())
        assert second["node_env"]["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] != cluster["node_env"].get(
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")
        platform_cmd("deploy", f"{APPS}/scale_to_zero.py::Sleepy", "--app-name", "second-zero", env=env)
        owner = platform_cmd("whoami", env=env).stdout.strip().split()[0]
        second_key = {"Authorization": f"Key {(home / 'credentials').read_text().strip()}"}
        with httpx.Client(base_url=second["http_url"], timeout=60) as other:
            def both_at_zero() -> bool:
                return _running(cli("status", "--json", as_user="lena").output, "first-zero") == 0 \
                    and _running(platform_cmd("status", "--json", env=env).stdout, "second-zero") == 0

            wait_until(both_at_zero, "both apps to scale to zero", timeout=90, every=2)
            lena = {"Authorization": f"Key {keys['lena']}"}
            for _ in range(5):
                mine = http.post("/lena/first-zero/", json={}, headers=lena)
                theirs = other.post(f"/{owner}/second-zero/", json={}, headers=second_key)
                assert mine.status_code == 200, mine.text
                assert theirs.status_code == 200, theirs.text
                assert http.post("/lena/first-zero/", json={}).status_code == 401
                assert other.post(f"/{owner}/second-zero/", json={}).status_code == 401
    finally:
        platform_cmd("down", check=False, env=env)
    port = second["client_server_port"]
    assert port and not _cluster_processes("ray.util.client.server", f"--port={port}\0")
    assert not _cluster_processes(second["temp_dir"])


def _running(status_json: str, app: str) -> int:
    found = next(a for a in json.loads(status_json)["apps"] if a["name"] == app)
    return sum(n for state, n in found["replicas"].items() if state in ("RUNNING", "STARTING"))
