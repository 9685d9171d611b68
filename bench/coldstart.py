"""Cold start: request -> response for an app scaled to zero (trivial `setup()`), through
tenantserve, against the same endpoint on bare Ray Serve, in one run.

The baselines run first, on a plain local Ray cluster (no tenantserve settings on its
nodes): Serve's default autoscaling (only the scale-down delays shortened, so that the
app reaches zero), and Serve tuned the way the platform tunes its apps (its autoscaling
config and metric push intervals). Then the platform, on a cluster of its own.

    python bench/coldstart.py [--repeats 5]

Goal (issue 7): 1 s or less through the platform.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import httpx
import ray
from ray import serve

sys.path.insert(0, os.path.dirname(__file__))
from baselines import run_bare_serve  # noqa: E402
from common import BENCH, free_port, local_platform, platform, table, wait_ok  # noqa: E402

DEFAULT = "bare Serve (default autoscaling)"
TUNED = "bare Serve (tuned like the platform)"
PLATFORM = "platform"


def running_replicas(app: str) -> int:
    status = serve.status().applications[app]
    return sum(d.replica_states.get("RUNNING", 0) + d.replica_states.get("STARTING", 0)
               for d in status.deployments.values())


def wait_for_zero(app: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while running_replicas(app) and time.monotonic() < deadline:
        time.sleep(0.2)
    if running_replicas(app):
        raise SystemExit(f"{app} did not scale to zero within {timeout:g}s")


def cold_request(url: str, app: str) -> float:
    wait_for_zero(app)
    time.sleep(2)  # the stopped replica's process exits; the platform's spare worker is back
    started = time.perf_counter()
    response = httpx.post(url, json={"text": "wake up"}, timeout=120)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url}: {response.status_code} {response.text}")
    return elapsed


def measure(targets: dict[str, tuple[str, str]], repeats: int, times: dict[str, list[float]]) -> None:
    for url, _ in targets.values():
        wait_ok(url, {"text": "warm"})
    for _ in range(repeats):
        for name, (url, app) in targets.items():
            times.setdefault(name, []).append(cold_request(url, app))


def bare_phase(repeats: int, times: dict[str, list[float]]) -> None:
    from tenantserve.adapters.fal.bundle import prepare
    from tenantserve.adapters.fal.deployment import autoscaling_config
    from tenantserve.platform.cluster.ray_cluster import CLUSTER_ENV

    os.environ.update(CLUSTER_ENV)  # the tuned baseline's metric pushes; the local cluster inherits them
    with tempfile.TemporaryDirectory(prefix="bare-") as temp_dir:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, logging_level="ERROR")
        try:
            port = free_port()
            serve.start(http_options={"port": port})
            base = f"http://127.0.0.1:{port}"
            shortened = {"downscale_delay_s": 1, "downscale_to_zero_delay_s": 1}
            default = run_bare_serve("bare-default", min_replicas=0, max_replicas=1, initial_replicas=1, **shortened)
            tuned = run_bare_serve("bare-tuned", **autoscaling_config(prepare(f"{BENCH}/apps/echo.py::ColdEcho", owner="bench")))
            measure({DEFAULT: (base + default, "bare-default"), TUNED: (base + tuned, "bare-tuned")}, repeats, times)
            serve.shutdown()
        finally:
            ray.shutdown()
            for name in CLUSTER_ENV:
                os.environ.pop(name, None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    bare_phase(args.repeats, times)
    with local_platform() as base:
        platform("deploy", f"{BENCH}/apps/echo.py::ColdEcho", "--auth", "public")
        measure({PLATFORM: (f"{base}/bench/cold-echo/", "bench.cold-echo")}, args.repeats, times)
    rows = [("target", "median s", "runs s")]
    for name, values in times.items():
        rows.append((name, f"{statistics.median(values):.2f}", ", ".join(f"{v:.2f}" for v in values)))
    print(table(rows))
    ours = statistics.median(times[PLATFORM])
    print(f"\nplatform cold start {ours:.2f}s (goal <= 1 s); "
          + "; ".join(f"{ours / statistics.median(times[name]):.2f}x {name}" for name in (DEFAULT, TUNED)))


if __name__ == "__main__":
    main()
