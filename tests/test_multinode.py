"""A platform on two Ray nodes: a CPU head started by `platform up` and a worker joined with
`ray start --address`, advertising a fake A100. GPU apps go to the worker; losing the
worker shows in `platform status`, and the app comes back when a GPU node joins again.

Both nodes run on this machine, in a private platform (own state directory, ports and
Ray temp dir) so that the session's cluster is untouched."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import httpx
import pytest

from helpers import APPS, free_port, platform_cmd, wait_until

pytestmark = pytest.mark.cluster  # it starts platforms of its own


def _join_worker(head: str, node_env: dict[str, str], envs: Path) -> subprocess.Popen:
    """A GPU node started with the head's settings (its ingress included), as the README
    says; its environments live in a folder of its own, as on a machine of its own."""
    ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    return subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={head}", "--num-cpus=2", "--num-gpus=1",
         "--resources", json.dumps({"accelerator_type:A100": 1}), *ports, "--block"],
        env={**os.environ, **node_env, "TENANTSERVE_ENVS": str(envs), "RAY_AUTH_MODE": "token"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        try:
            os.killpg(worker.pid, signal.SIGTERM)  # `ray start --block` stops the node's processes
        except ProcessLookupError:
            pass
        worker.wait(timeout=60)


def test_gpu_apps_run_on_the_gpu_node_and_report_its_loss(tmp_path) -> None:
    env = {"TENANTSERVE_HOME": str(tmp_path / "home")}
    http_port = free_port()
    platform_cmd("up", f"--port={free_port()}", f"--http-port={http_port}", f"--dashboard-port={free_port()}",
                 "--num-cpus=2", "--num-gpus=0", env=env)
    recorded = json.loads((tmp_path / "home" / "cluster.json").read_text())
    head, head_env = recorded["address"], recorded["node_env"]
    assert recorded["ingress"] == "haproxy" and head_env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    base = f"http://127.0.0.1:{http_port}"

    def status() -> dict:
        return json.loads(platform_cmd("status", "--json", env=env).stdout)

    def gpu_worker(current: dict) -> Optional[dict]:
        return next((n for n in current["nodes"] if n["alive"] and n["total"].get("accelerator_type:A100")), None)

    worker_envs = tmp_path / "worker-envs"
    worker = _join_worker(head, head_env, worker_envs)
    try:
        worker_node = wait_until(lambda: gpu_worker(status()), "the GPU worker to join")
        user = platform_cmd("whoami", env=env).stdout.split()[0]
        # The deploy builds the environment on the head; the worker builds its own when the
        # replica lands there.
        platform_cmd("deploy", f"{APPS}/gpu.py::HumanizedOnGpu", "--auth", "public", env=env)
        placed = httpx.post(f"{base}/{user}/humanized-on-gpu/", timeout=30).json()
        assert placed["node_id"] == worker_node["id"] and Path(placed["prefix"]).parent == worker_envs
        assert (tmp_path / "home" / "envs" / Path(placed["prefix"]).name).is_dir()
        platform_cmd("apps", "delete", "humanized-on-gpu", env=env)  # frees the one A100

        platform_cmd("deploy", f"{APPS}/gpu.py::AlwaysOnGpu", "--auth", "public", env=env)
        platform_cmd("deploy", f"{APPS}/gpu.py::AlwaysOnCpu", "--auth", "public", env=env)

        gpu_app = httpx.post(f"{base}/{user}/always-on-gpu/", timeout=30).json()
        assert gpu_app["node_id"] == worker_node["id"] and gpu_app["gpu_ids"] == [0]
        cpu_app = httpx.post(f"{base}/{user}/always-on-cpu/", timeout=30).json()
        assert cpu_app["gpu_ids"] == [] and cpu_app["node_id"] in {n["id"] for n in status()["nodes"] if n["alive"]}

        _stop_worker(worker)

        def gpu_app_stranded() -> Optional[dict]:
            current = status()
            app = next(a for a in current["apps"] if a["name"] == "always-on-gpu")
            return current if "cannot be placed" in app["waiting"] else None

        after = wait_until(gpu_app_stranded, "status to report the GPU app unplaceable")
        assert not next(n for n in after["nodes"] if n["id"] == worker_node["id"])["alive"]
        stranded = next(a for a in after["apps"] if a["name"] == "always-on-gpu")
        assert "accelerator_type:A100" in stranded["waiting"] and stranded["nodes"] == []
        assert httpx.post(f"{base}/{user}/always-on-cpu/", timeout=30).status_code == 200

        worker = _join_worker(head, head_env, worker_envs)  # a GPU node joins again: the app recovers on it
        new_node = wait_until(lambda: gpu_worker(status()), "a new GPU worker to join")
        answer = wait_until(
            lambda: (r := httpx.post(f"{base}/{user}/always-on-gpu/", timeout=30)).status_code == 200 and r.json(),
            "the GPU app to serve again",
        )
        assert answer["node_id"] == new_node["id"]

        # An operator on the head of a cluster that this machine did not start (`ray up`,
        # KubeRay): `platform up --address` brings the services and apps up, idempotently,
        # and records the cluster so that the CLI there finds the platform.
        state = tmp_path / "home" / "cluster.json"
        started = state.read_text()
        state.unlink()
        try:
            attached = platform_cmd("up", "--address", head, env={**env, "RAY_AUTH_MODE": "token"}).stdout
            assert "Platform up on the Ray cluster" in attached
            assert json.loads(state.read_text())["started_here"] is False
            assert platform_cmd("whoami", env={**env, "TENANTSERVE_URL": base}).stdout.split()[0] == user
            assert httpx.post(f"{base}/{user}/always-on-cpu/", timeout=30).status_code == 200
        finally:
            state.write_text(started)  # this test's `down` stops the cluster it started
    finally:
        platform_cmd("down", check=False, env=env)
        _stop_worker(worker)
