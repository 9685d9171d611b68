"""Density: many apps at min_concurrency=0 on one node. Deploys them one after another
through the platform's deploy path and prints, every `--step` apps, the median time of
the last step's deploys, the memory of the cluster's processes and their CPU while idle;
then calls every app once (each wakes from zero) and counts the answers.

    python bench/density.py [--apps 200] [--step 25]

Goals (issue 7): deploy time per app flat in the number of apps, memory <= 3 GB, idle
CPU <= 15% of the node, and every app answers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH, local_platform, table  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def cluster_pids(temp_dir: str) -> list[int]:
    """The cluster's processes: those naming its temp dir, and their descendants."""
    from tenantserve.platform.cluster import _cluster_processes

    return list(_cluster_processes(temp_dir))


def memory_gb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """{pid: CPU seconds so far} of those processes still alive."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, ValueError, IndexError):
            pass
    return found


def idle_cpu_percent(temp_dir: str, seconds: float = 10) -> float:
    """The cluster's CPU use over `seconds` with no requests, as % of the node's cores,
    counted over the processes alive at both ends (one that exits in between, a replica
    scaling away or an HAProxy replaced at a reload, would take its whole past with it)."""
    pids = cluster_pids(temp_dir)
    before, started = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    after = cpu_seconds(pids)
    used = sum(after[pid] - before[pid] for pid in after.keys() & before.keys())
    return used / (time.monotonic() - started) / os.cpu_count() * 100


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--step", type=int, default=25)
    args = parser.parse_args()
    from dataclasses import replace

    from tenantserve.adapters.fal.bundle import prepare
    from tenantserve.platform import apps
    from tenantserve.platform.cluster import recorded
    from tenantserve.platform.registry import Registry

    rows = [("apps", "deploy s (median of step)", "memory GB", "idle CPU %")]
    with local_platform() as base:
        info = recorded()
        assert info is not None and info.temp_dir
        registry = Registry()
        registry.create_user("bench", admin=True)
        template = prepare(f"{BENCH}/apps/echo.py::ColdEcho", owner="bench")
        template = replace(template, options=template.options.model_copy(update={"app_auth": "public"}))
        times: list[float] = []
        for index in range(1, args.apps + 1):
            bundle = replace(template, app_name=f"echo-{index:03d}")
            started = time.perf_counter()
            apps.deploy(bundle, base, registry)
            times.append(time.perf_counter() - started)
            if index % args.step == 0 or index == args.apps:
                time.sleep(5)  # let the last replicas scale back to zero
                rows.append((str(index), f"{statistics.median(times[-args.step:]):.2f}",
                             f"{memory_gb(cluster_pids(info.temp_dir)):.2f}",
                             f"{idle_cpu_percent(info.temp_dir):.1f}"))
                print(table(rows[-1:]), flush=True)
        answered, wake = 0, []
        with httpx.Client(timeout=120) as client:
            for index in range(1, args.apps + 1):
                started = time.perf_counter()
                if client.post(f"{base}/bench/echo-{index:03d}/", json={"text": "hi"}).status_code == 200:
                    answered += 1
                wake.append(time.perf_counter() - started)
    print(table(rows))
    print(f"answered {answered}/{args.apps}; first request to each (from zero): "
          f"median {statistics.median(wake):.2f} s, max {max(wake):.2f} s")


if __name__ == "__main__":
    main()
