"""A request to an app scaled to zero starts its replica in a Ray worker that was already
waiting: a spare the platform keeps on each node, its modules imported, its spare runner
ready with fal's SDK imported."""

import os
import signal
import time
from pathlib import Path

import ray

from helpers import APPS, deployed, replica_pids, wait_until

TICKS = os.sysconf("SC_CLK_TCK")


def started_at(pid: int) -> float:
    """When the process started, in seconds since boot (CLOCK_BOOTTIME)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / TICKS


def _session_dir() -> str:
    from tenantserve.platform.cluster.ray_cluster import recorded

    info = recorded()
    assert info is not None and info.temp_dir
    return info.temp_dir


def _in_cluster(pid: int, temp_dir: str) -> bool:
    """Whether the worker's raylet (its parent) is the session cluster's."""
    parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    return temp_dir.encode() in Path(f"/proc/{parent}/cmdline").read_bytes()


def idle_workers() -> dict[int, float]:
    """The session cluster's idle Ray workers (never another cluster's on this machine)."""
    temp_dir = _session_dir()
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::IDLE") and _in_cluster(int(entry.name), temp_dir):
                    found[int(entry.name)] = started_at(int(entry.name))
            except OSError:
                continue
    return found


def test_an_app_at_zero_wakes_in_a_waiting_worker(cli, http) -> None:
    deployed(cli, f"{APPS}/scale_to_zero.py::Sleepy", "--user", "rita", "--app-name", "wakes-warm")
    assert "spares" in ray.serve.status().applications  # the keeper, one of the platform's own apps

    def at_zero() -> bool:
        app = ray.serve.status().applications["rita.wakes-warm"]
        return not any(d.replica_states.get("RUNNING", 0) or d.replica_states.get("STARTING", 0)
                       for d in app.deployments.values())

    wait_until(at_zero, "the app to scale to zero", timeout=60, every=0.5)
    wait_until(idle_workers, "a spare worker", timeout=60, every=0.5)

    sent = time.clock_gettime(time.CLOCK_BOOTTIME)
    answer = http.post("/rita/wakes-warm/", json={})
    assert answer.status_code == 200
    assert started_at(replica_pids("rita.wakes-warm")[0]) < sent, "the replica started in a new process"
    # Its runner was the worker's spare, fal's SDK imported before the request came.
    logs = wait_until(lambda: (out := cli("logs", "wakes-warm", as_user="rita").output).count("spare runner") and out,
                      "the replica's log", timeout=20)
    assert "claimed" in logs

    cli("apps", "delete", "wakes-warm", "--user", "rita")


def test_a_spare_that_dies_is_replaced(cluster) -> None:
    def spares_up_for(seconds: float) -> dict[int, float]:
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
        return {pid: at for pid, at in idle_workers().items() if now - at > seconds}

    # Ones that have had time to register with their raylet: the keeper counts them as
    # spares. All of them die (an earlier test may leave one more than the keeper keeps).
    wait_until(lambda: spares_up_for(5), "a spare worker up for 5 s", timeout=60, every=0.5)
    killed_at = time.clock_gettime(time.CLOCK_BOOTTIME)
    for spare in idle_workers():
        os.kill(spare, signal.SIGKILL)
    wait_until(lambda: [pid for pid, at in idle_workers().items() if at >= killed_at - 0.01],
               "the keeper to start another spare", timeout=60, every=0.5)
