"""Cold start: request -> response for an app scaled to zero (trivial `setup()`), through
tenantserve against the same endpoint on bare Ray Serve with Serve's default autoscaling
settings (only the scale-down delay shortened, so that the test reaches zero), in one run.

    python bench/coldstart.py [--repeats 3]

Goal (issue 2): 2 s or less through the platform.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import httpx
from ray import serve

sys.path.insert(0, __import__("os").path.dirname(__file__))
from baselines import run_bare_serve  # noqa: E402
from common import BENCH, local_platform, platform, table, wait_ok  # noqa: E402


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
    time.sleep(1)
    started = time.perf_counter()
    response = httpx.post(url, json={"text": "wake up"}, timeout=120)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url}: {response.status_code} {response.text}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with local_platform() as base:
        platform("deploy", f"{BENCH}/apps/echo.py::ColdEcho", "--auth", "public")
        bare_route = run_bare_serve(
            "bare-cold", min_replicas=0, max_replicas=1, initial_replicas=1,
            downscale_delay_s=1, downscale_to_zero_delay_s=1,
        )
        targets = {
            "platform": (f"{base}/bench/cold-echo/", "bench.cold-echo"),
            "bare Serve (default autoscaling)": (base + bare_route, "bare-cold"),
        }
        for url, _ in targets.values():
            wait_ok(url, {"text": "warm"})
        times: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.repeats):
            for name, (url, app) in targets.items():
                times[name].append(cold_request(url, app))
    rows = [("target", "median s", "runs s")]
    for name, values in times.items():
        rows.append((name, f"{statistics.median(values):.2f}", ", ".join(f"{v:.2f}" for v in values)))
    print(table(rows))
    ratio = statistics.median(times["platform"]) / statistics.median(times["bare Serve (default autoscaling)"])
    print(f"\nplatform cold start {statistics.median(times['platform']):.2f}s (goal <= 2 s), "
          f"{ratio:.2f}x bare Serve with default autoscaling")


if __name__ == "__main__":
    main()
