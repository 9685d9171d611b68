"""What answers on the HTTP port: Serve's HAProxy ingress by default (the session's cluster
runs it, so every other test exercises it), Serve's Python proxy where HAProxy cannot go
(TLS: tests/test_fal_client.py) or is not installed."""

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from helpers import APPS, deployed, free_port, platform_cmd

pytestmark = pytest.mark.cluster  # it starts platforms of its own


def _haproxy_configs() -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if words and words[0].endswith("haproxy") and "-f" in words:
            found.append(words[words.index("-f") + 1])
    return found


def test_the_platform_serves_through_haproxy(cluster, cli, http) -> None:
    assert cluster["ingress"] == "haproxy"
    # This cluster's HAProxy, with its own files (not Serve's shared /tmp/haproxy-serve).
    assert any(config.startswith("/tmp/tsh-") for config in _haproxy_configs())
    deployed(cli, f"{APPS}/bulk.py::Bulk", "--user", "sam")
    # Large bodies both ways: 16 MB in, 8 MB out.
    data = "y" * (16 * 1024 * 1024)
    answer = http.post("/sam/bulk/digest", json={"data": data}).json()
    assert answer == {"length": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}
    assert len(http.post("/sam/bulk/blob", json={"megabytes": 8}).json()["data"]) == 8 * 1024 * 1024


def test_without_haproxy_the_platform_warns_and_uses_the_proxy(tmp_path) -> None:
    env = {"TENANTSERVE_HOME": str(tmp_path / "home"), "RAY_SERVE_HAPROXY_BINARY_PATH": str(tmp_path / "no-haproxy")}
    http_port = free_port()
    try:
        up = platform_cmd("up", f"--port={free_port()}", f"--http-port={http_port}",
                          f"--dashboard-port={free_port()}", "--num-cpus=2", env=env)
        assert "no HAProxy binary found" in up.stdout and "apt install haproxy" in up.stdout
        assert json.loads((tmp_path / "home" / "cluster.json").read_text())["ingress"] == "proxy"
        platform_cmd("deploy", f"{APPS}/bulk.py::Bulk", "--auth", "public", env=env)
        user = platform_cmd("whoami", env=env).stdout.split()[0]
        answer = httpx.post(f"http://127.0.0.1:{http_port}/{user}/bulk/digest", json={"data": "abc"}, timeout=30)
        assert answer.json()["length"] == 3
        asked = platform_cmd("up", "--ingress", "haproxy", f"--port={free_port()}", env=env, check=False)
        assert asked.returncode == 0  # the platform already runs: `up` is a no-op
    finally:
        platform_cmd("down", check=False, env=env)
