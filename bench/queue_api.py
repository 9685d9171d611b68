"""The queue against synchronous calls, in one run on one platform:

- latency: a sync call, and a queued one (submit, then its status stream until it says
  COMPLETED, then the result), one at a time; what the queue adds until the stream says
  the request ended, and until its result is fetched;
- throughput: `--burst` sync calls (64 at a time) against as many requests submitted at
  once to the queue, the last one waited for and every result fetched; after a warm-up
  burst of each (the first burst's connections and replicas' first calls would count
  against whichever path ran first), two rounds in turn, the faster of each; the queue's
  ratio to sync;
- fairness: another tenant submits `--flood` requests, then this tenant's queued calls
  are timed while that flood drains; the ratio to the idle platform's.

    python bench/queue_api.py [--calls 30] [--burst 800] [--flood 2000]

(Not `bench/queue.py`: a file of that name beside the other benchmarks would stand in for
the standard library's `queue` module in every one of them.) The echo app takes 16
requests at a time (max_multiplexing=16), so the queue runs 16 of a burst at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import aiohttp
import httpx

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH, local_platform, platform, table, wait_ok  # noqa: E402

SYNC_CLIENTS = 64


def sync_call(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    assert client.post(url, json={"text": "hi"}).status_code == 200
    return time.perf_counter() - started


def streamed_call(client: httpx.Client, url: str) -> tuple[float, float]:
    """Submit, follow the status stream (as fal_client's subscribe does) to the end, fetch:
    seconds until the stream said COMPLETED, and until the result was fetched."""
    started = time.perf_counter()
    submitted = client.post(url, json={"text": "hi"}).json()
    with client.stream("GET", submitted["status_url"] + "/stream") as events:
        for line in events.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["status"] == "COMPLETED":
                break
    ended = time.perf_counter() - started
    assert client.get(submitted["response_url"]).status_code == 200
    return ended, time.perf_counter() - started


def _session() -> aiohttp.ClientSession:
    """The load generator's client: aiohttp, which spends a fraction of httpx's CPU per call;
    on a two-core machine the client's CPU is taken from the platform it measures."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SYNC_CLIENTS),
                                 timeout=aiohttp.ClientTimeout(total=300))


async def _post(session: aiohttp.ClientSession, url: str, i: int) -> dict:
    async with session.post(url, json={"text": str(i)}) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def sync_burst(url: str, count: int) -> float:
    """`count` sync calls, SYNC_CLIENTS at a time; seconds for all of them."""
    async with _session() as session:
        started = time.perf_counter()
        await asyncio.gather(*(_post(session, url, i) for i in range(count)))
        return time.perf_counter() - started


async def submit_all(session: aiohttp.ClientSession, url: str, count: int) -> list[dict]:
    return await asyncio.gather(*(_post(session, url, i) for i in range(count)))


async def queue_burst(url: str, count: int) -> float:
    """Submit `count` requests at once, wait for the last one (the line is first in, first
    out), then fetch every result, as a batch job would."""
    async with _session() as session:
        started = time.perf_counter()
        submitted = await submit_all(session, url, count)

        async def fetch(request: dict) -> None:
            while True:
                async with session.get(request["response_url"]) as answer:
                    if answer.status != 400:  # 400: not done yet
                        assert answer.status == 200, await answer.text()
                        return
                await asyncio.sleep(0.05)

        await fetch(submitted[-1])
        await asyncio.gather(*(fetch(request) for request in submitted))
        return time.perf_counter() - started


def flood(url: str, count: int) -> None:
    async def main() -> None:
        async with _session() as session:
            await submit_all(session, url, count)

    asyncio.run(main())


def _row(name: str, times: list[float]) -> tuple[str, ...]:
    times = sorted(times)
    return (name, f"{statistics.median(times) * 1000:.1f}", f"{times[int(len(times) * 0.9) - 1] * 1000:.1f}",
            str(len(times)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--burst", type=int, default=800)
    parser.add_argument("--flood", type=int, default=2000, help="requests the other tenant queues (0: skip)")
    args = parser.parse_args()
    with local_platform() as base:
        platform("deploy", f"{BENCH}/apps/echo.py::Echo", "--auth", "public")
        sync_url, queue_url = f"{base}/bench/echo/", f"{base}/queue/bench/echo"
        wait_ok(sync_url, {"text": "warm"})
        with httpx.Client(timeout=60) as client:
            streamed_call(client, queue_url)
            sync = [sync_call(client, sync_url) for _ in range(args.calls)]
            streamed = [streamed_call(client, queue_url) for _ in range(args.calls)]
        asyncio.run(sync_burst(sync_url, 200))
        asyncio.run(queue_burst(queue_url, 200))
        sync_s = queue_s = float("inf")
        for _ in range(2):
            sync_s = min(sync_s, asyncio.run(sync_burst(sync_url, args.burst)))
            queue_s = min(queue_s, asyncio.run(queue_burst(queue_url, args.burst)))
        flooded: list[tuple[float, float]] = []
        if args.flood:
            platform("users", "create", "flood")
            platform("deploy", f"{BENCH}/apps/echo.py::Echo", "--user", "flood", "--auth", "public")
            wait_ok(f"{base}/flood/echo/", {"text": "warm"})
            flood(f"{base}/queue/flood/echo", args.flood)
            with httpx.Client(timeout=120) as client:
                flooded = [streamed_call(client, queue_url) for _ in range(args.calls)]
    ended, fetched = [s[0] for s in streamed], [s[1] for s in streamed]
    rows = [("path (one at a time)", "median ms", "p90 ms", "calls"), _row("sync POST", sync),
            _row("queue: submit + status stream until COMPLETED", ended),
            _row("queue: the same + result fetched", fetched)]
    if flooded:
        rows.append(_row(f"the same while another tenant has {args.flood} queued", [s[1] for s in flooded]))
    print(table(rows))
    print(f"added by the queue (medians): {(statistics.median(ended) - statistics.median(sync)) * 1000:.1f} ms "
          f"until the stream says COMPLETED, {(statistics.median(fetched) - statistics.median(sync)) * 1000:.1f} ms "
          "until the result is fetched")
    print(f"throughput, {args.burst} requests: sync {args.burst / sync_s:.0f}/s ({SYNC_CLIENTS} at a time), "
          f"queue {args.burst / queue_s:.0f}/s (submitted at once, results fetched): "
          f"queue/sync {sync_s / queue_s:.2f}x")
    if flooded:
        print(f"fairness: a queued call while another tenant's {args.flood} drain takes "
              f"{statistics.median(s[1] for s in flooded) / statistics.median(fetched):.2f}x the idle platform's "
              "(median, result fetched)")


if __name__ == "__main__":
    main()
