"""The queue against synchronous calls, in one run on one platform: the latency that
submit + poll + result adds to a trivial endpoint, and how many queued requests per
second go from submitted to completed.

    python bench/queue_api.py [--calls 30] [--burst 200]

(Not `bench/queue.py`: a file of that name beside the other benchmarks would stand in for
the standard library's `queue` module in every one of them.)

The echo app takes 16 requests at a time (max_multiplexing=16), so the queue may run 16
of the burst at once; polling is every 10 ms, as a tight client would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH, local_platform, platform, table, wait_ok  # noqa: E402


def sync_call(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    assert client.post(url, json={"text": "hi"}).status_code == 200
    return time.perf_counter() - started


def queued_call(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    submitted = client.post(url, json={"text": "hi"}).json()
    while client.get(submitted["status_url"]).json()["status"] != "COMPLETED":
        time.sleep(0.01)
    assert client.get(submitted["response_url"]).status_code == 200
    return time.perf_counter() - started


async def burst(url: str, count: int) -> float:
    """Submit `count` requests at once; seconds until the last one completed."""
    async with httpx.AsyncClient(timeout=120) as client:
        started = time.perf_counter()
        submitted = await asyncio.gather(*(client.post(url, json={"text": str(i)}) for i in range(count)))
        pending = [answer.json()["status_url"] for answer in submitted]
        while pending:
            states = await asyncio.gather(*(client.get(status) for status in pending[:50]))
            done = {status for status, state in zip(pending[:50], states) if state.json()["status"] == "COMPLETED"}
            pending = [status for status in pending if status not in done]
            if pending and not done:
                await asyncio.sleep(0.05)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    with local_platform() as base:
        platform("deploy", f"{BENCH}/apps/echo.py::Echo", "--auth", "public")
        sync_url, queue_url = f"{base}/bench/echo/", f"{base}/queue/bench/echo"
        wait_ok(sync_url, {"text": "warm"})
        with httpx.Client(timeout=60) as client:
            queued_call(client, queue_url)
            sync = [sync_call(client, sync_url) for _ in range(args.calls)]
            queued = [queued_call(client, queue_url) for _ in range(args.calls)]
        elapsed = asyncio.run(burst(queue_url, args.burst))
    rows = [("path", "median ms", "p90 ms", "calls")]
    for name, times in (("sync POST", sync), ("queue submit + poll + result", queued)):
        times = sorted(times)
        rows.append((name, f"{statistics.median(times) * 1000:.1f}", f"{times[int(len(times) * 0.9) - 1] * 1000:.1f}",
                     str(len(times))))
    print(table(rows))
    print(f"added by the queue (medians): {(statistics.median(queued) - statistics.median(sync)) * 1000:.1f} ms")
    print(f"queue throughput: {args.burst} requests submitted at once, all completed in {elapsed:.2f} s "
          f"= {args.burst / elapsed:.0f} requests/s")


if __name__ == "__main__":
    main()
