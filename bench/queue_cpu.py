"""Where a queued request's CPU goes, against a sync call's, in one run on one platform.

Both bursts of `bench/queue_api.py` keep this machine's cores busy, so their throughput
ratio is about the ratio of the CPU they cost. This benchmark reads each process's CPU
time (`/proc`) around:

- `--burst` sync calls (64 at a time) and as many requests submitted at once to the queue,
  results fetched (`queue_api.py`'s bursts, after a warm-up burst of each);
- as many fetches of one finished request's result, and of its status: the queue
  service's cost of answering one HTTP exchange, with nothing to dispatch or record;

and prints the CPU-seconds per process kind, the cores each burst kept busy, and the
budget a queue at `--goal` x sync throughput would have: what the queue burst may cost in
all, less what it costs outside the queue service.

    python bench/queue_cpu.py [--burst 800] [--goal 0.8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import time
from typing import Awaitable, Callable

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH, local_platform, platform, table, wait_ok  # noqa: E402
from queue_api import _session, queue_burst, sync_burst  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
QUEUE_SERVICE = "queue service"


def _kind(pid: str) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as source:
        words = source.read().replace(b"\0", b" ").decode(errors="replace").split()
    command = " ".join(words)
    if "tenantserve_runner" in command:
        return "app's runner"
    if "ServeReplica:queue:" in command:
        return QUEUE_SERVICE
    if "ServeReplica:bench.echo:" in command:
        return "app's replica"
    if int(pid) == os.getpid():
        return "client (this process)"
    if "haproxy" in command:
        return "haproxy"
    if words and words[0].startswith("ray::"):
        return words[0]
    return "other (Ray's daemons, the kernel's workers)"


def cpu_by_process() -> dict[tuple[str, str], float]:
    seconds: dict[tuple[str, str], float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as source:
                fields = source.read().rsplit(")", 1)[1].split()
            seconds[(_kind(pid), pid)] = (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            continue
    return seconds


def measure(run: Callable[[], Awaitable[object]]) -> tuple[float, collections.Counter]:
    """Wall seconds of `run` and the CPU-seconds each kind of process spent meanwhile."""
    before = cpu_by_process()
    started = time.perf_counter()
    asyncio.run(run())
    wall = time.perf_counter() - started
    spent: collections.Counter = collections.Counter()
    for (kind, pid), seconds in cpu_by_process().items():
        spent[kind] += seconds - before.get((kind, pid), 0.0)
    return wall, spent


async def fetch_many(url: str, count: int) -> None:
    async with _session() as session:

        async def one() -> None:
            async with session.get(url) as answer:
                assert answer.status in (200, 202), await answer.text()
                await answer.read()

        await asyncio.gather(*(one() for _ in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=800)
    parser.add_argument("--goal", type=float, default=0.8, help="the queue's throughput as a share of sync's")
    args = parser.parse_args()
    n = args.burst
    with local_platform() as base:
        platform("deploy", f"{BENCH}/apps/echo.py::Echo", "--auth", "public")
        sync_url, queue_url = f"{base}/bench/echo/", f"{base}/queue/bench/echo"
        wait_ok(sync_url, {"text": "warm"})
        asyncio.run(sync_burst(sync_url, 200))
        asyncio.run(queue_burst(queue_url, 200))
        finished = httpx.post(queue_url, json={"text": "once"}, timeout=60).json()
        while httpx.get(finished["response_url"], timeout=60).status_code == 400:
            time.sleep(0.05)
        runs = {
            "sync burst": measure(lambda: sync_burst(sync_url, n)),
            "queue burst": measure(lambda: queue_burst(queue_url, n)),
            "result fetches": measure(lambda: fetch_many(finished["response_url"], n)),
            "status reads": measure(lambda: fetch_many(finished["status_url"], n)),
        }
    kinds = sorted({kind for _, spent in runs.values() for kind in spent},
                   key=lambda kind: -runs["queue burst"][1][kind])
    rows = [(f"CPU-s per {n}", *runs)]
    rows += [(kind, *(f"{spent[kind]:.2f}" for _, spent in runs.values())) for kind in kinds
             if max(spent[kind] for _, spent in runs.values()) >= 0.02]
    rows.append(("all", *(f"{sum(spent.values()):.2f}" for _, spent in runs.values())))
    rows.append(("wall s", *(f"{wall:.2f}" for wall, _ in runs.values())))
    rows.append(("cores busy", *(f"{sum(spent.values()) / wall:.2f}" for wall, spent in runs.values())))
    print(table(rows))
    (sync_wall, sync_cpu), (queue_wall, queue_cpu) = runs["sync burst"], runs["queue burst"]
    budget = sum(sync_cpu.values()) / args.goal
    outside = sum(queue_cpu.values()) - queue_cpu[QUEUE_SERVICE]
    print(f"queue/sync throughput {sync_wall / queue_wall:.2f}x; by CPU "
          f"{sum(sync_cpu.values()) / sum(queue_cpu.values()):.2f}x")
    # The most generous case: the app's replica costing no more for a queued request than for a sync call.
    leanest = outside - max(0.0, queue_cpu["app's replica"] - sync_cpu["app's replica"])
    print(f"at {args.goal}x sync the queue burst may cost {budget:.2f} CPU-s in all; outside the queue service it "
          f"costs {outside:.2f} ({leanest:.2f} if the app's replica took a queued request as cheaply as a sync "
          f"call), which leaves the queue service {budget - outside:.2f} ({budget - leanest:.2f}) CPU-s, "
          f"{(budget - outside) / n * 1000:.2f} ({(budget - leanest) / n * 1000:.2f}) ms a request, for its submit, "
          f"dispatch, records and result fetch; it spent {queue_cpu[QUEUE_SERVICE]:.2f}, and answering {n} "
          f"result fetches alone costs it {runs['result fetches'][1][QUEUE_SERVICE]:.2f}")


if __name__ == "__main__":
    main()
