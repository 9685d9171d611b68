"""Density: many apps at min_concurrency=0 on one node. Deploys them one after another
through the platform's deploy path and prints, every `--step` apps, the median time of
the last step's deploys, the memory of the cluster's processes (proportional set size;
also the sum of resident sizes, which counts shared pages once per process) and their
CPU while idle, each with its largest parts by process; then calls every app once (each
wakes from zero) and counts the answers.

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
    from tenantserve.platform.cluster.ray_cluster import _cluster_processes

    return list(_cluster_processes(temp_dir))


def process_name(pid: int) -> str:
    """`ray::ServeController`, `raylet`, `haproxy`, or a Python program's script name."""
    try:
        args = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return "?"
    if not args:
        return "?"
    if args[0].startswith("ray-dashboard-"):  # the dashboard's forked modules
        return args[0].split()[0]
    words = args[0].split() if args[0].startswith("ray::") else args
    name = os.path.basename(words[0])
    if name.startswith("python"):
        rest = iter(words[1:])
        for word in rest:
            if word in ("-m", "-c"):
                name = next(rest, "") if word == "-m" else "python -c"
                break
            if not word.startswith("-"):
                name = os.path.basename(word)
                break
    return name.split(".")[0] if name.startswith("ray::ServeReplica") else name


def top(by_name: dict[str, float], unit: str, count: int = 5) -> str:
    return ", ".join(f"{name} {value:.{1 if unit == '%' else 2}f}{unit}"
                     for name, value in sorted(by_name.items(), key=lambda kv: -kv[1])[:count])


def memory_gb(pids: list[int]) -> tuple[float, float, dict[str, float]]:
    """The processes' memory in GB: proportional set size (shared pages, such as the Ray
    dashboard's forked modules share, counted once) in all and by process name, and the
    plain sum of resident sizes (which counts them in every process)."""
    by_name: dict[str, float] = {}
    resident = 0.0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            resident += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e9
        except (OSError, ValueError, IndexError):
            continue
        pss_kb = next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
        name = process_name(pid)
        by_name[name] = by_name.get(name, 0) + pss_kb / 1e6
    return sum(by_name.values()), resident, by_name


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


def idle_cpu_percent(temp_dir: str, seconds: float = 10) -> tuple[float, dict[str, float]]:
    """The cluster's CPU use over `seconds` with no requests, as % of the node's cores,
    counted over the processes alive at both ends (one that exits in between, a replica
    scaling away or an HAProxy replaced at a reload, would take its whole past with it);
    in all and by process name."""
    pids = cluster_pids(temp_dir)
    before, started = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    after = cpu_seconds(pids)
    scale = 100 / (time.monotonic() - started) / (os.cpu_count() or 1)
    by_name: dict[str, float] = {}
    for pid in after.keys() & before.keys():
        name = process_name(pid)
        by_name[name] = by_name.get(name, 0) + (after[pid] - before[pid]) * scale
    return sum(by_name.values()), by_name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--step", type=int, default=25)
    args = parser.parse_args()
    from dataclasses import replace

    from tenantserve.adapters.fal.bundle import prepare
    from tenantserve.platform.cluster.ray_cluster import recorded
    from tenantserve.platform.control import apps
    from tenantserve.platform.store.registry import Registry

    rows = [("apps", "deploy s (median of step)", "memory GB (PSS)", "RSS sum GB", "idle CPU %")]
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
                memory, resident, memory_by_name = memory_gb(cluster_pids(info.temp_dir))
                cpu, cpu_by_name = idle_cpu_percent(info.temp_dir)
                rows.append((str(index), f"{statistics.median(times[-args.step:]):.2f}", f"{memory:.2f}",
                             f"{resident:.2f}", f"{cpu:.1f}"))
                print(table(rows[-1:]), flush=True)
                print(f"  memory: {top(memory_by_name, ' GB')}\n  idle CPU: {top(cpu_by_name, '%')}", flush=True)
        answered, wake = 0, []
        with httpx.Client(timeout=120) as client:
            for index in range(1, args.apps + 1):
                started = time.perf_counter()
                if client.post(f"{base}/bench/echo-{index:03d}/", json={"text": "hi"}).status_code == 200:
                    answered += 1
                wake.append(time.perf_counter() - started)
        # Each app has now been routed from zero once (Serve's proxy keeps a handle to it).
        time.sleep(15)
        memory, resident, memory_by_name = memory_gb(cluster_pids(info.temp_dir))
        cpu, cpu_by_name = idle_cpu_percent(info.temp_dir)
        rows.append((f"{args.apps}, each woken once", "", f"{memory:.2f}", f"{resident:.2f}", f"{cpu:.1f}"))
        print(f"  memory: {top(memory_by_name, ' GB')}\n  idle CPU: {top(cpu_by_name, '%')}", flush=True)
    print(table(rows))
    print(f"answered {answered}/{args.apps}; first request to each (from zero): "
          f"median {statistics.median(wake):.2f} s, max {max(wake):.2f} s")


if __name__ == "__main__":
    main()
