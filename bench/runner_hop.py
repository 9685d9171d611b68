"""The replica -> runner hop's HTTP client: aiohttp (what the replica uses) against httpx
(what it used before), each sending the same small JSON POST to one uvicorn on a unix
socket, one request at a time, rounds interleaved. Needs no cluster.

    python bench/runner_hop.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

from tenantserve.adapters.fal.supervisor import RUNNER_URL, runner_client

BODY = b'{"text": "hello"}'
HEADERS = {"content-type": "application/json"}


async def answer(scope: dict, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def serve(socket: str) -> None:
    uvicorn.run(answer, uds=socket, log_level="warning", access_log=False)


async def measure(socket: str, requests: int, rounds: int) -> dict[str, list[float]]:
    hx = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket), base_url="http://runner", timeout=None)
    ah = runner_client(Path(socket))  # the replica's own client

    async def with_httpx() -> None:
        response = await hx.send(hx.build_request("POST", "/", content=BODY, headers=HEADERS), stream=True)
        async for _ in response.aiter_raw():
            pass
        await response.aclose()

    async def with_aiohttp() -> None:
        response = await ah.request("POST", RUNNER_URL + "/", data=BODY, headers=HEADERS, allow_redirects=False)
        async for _ in response.content.iter_any():
            pass
        response.release()

    latencies: dict[str, list[float]] = {"httpx (before)": [], "aiohttp (now)": []}
    try:
        for _ in range(rounds):
            for name, call in (("httpx (before)", with_httpx), ("aiohttp (now)", with_aiohttp)):
                for _ in range(100):
                    await call()
                for _ in range(requests):
                    started = time.perf_counter()
                    await call()
                    latencies[name].append(time.perf_counter() - started)
    finally:
        await hx.aclose()
        await ah.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        socket = str(Path(folder) / "app.sock")
        server = multiprocessing.Process(target=serve, args=(socket,), daemon=True)
        server.start()
        while not os.path.exists(socket):
            time.sleep(0.05)
        try:
            latencies = asyncio.run(measure(socket, args.requests, args.rounds))
        finally:
            server.terminate()
    p50 = {name: statistics.median(values) * 1e3 for name, values in latencies.items()}
    print("| client | p50 ms | p99 ms |\n|---|---|---|")
    for name, values in latencies.items():
        print(f"| {name} | {p50[name]:.3f} | {statistics.quantiles(values, n=100)[98] * 1e3:.3f} |")
    print(f"aiohttp / httpx p50: {p50['aiohttp (now)'] / p50['httpx (before)']:.2f}x")


if __name__ == "__main__":
    main()
