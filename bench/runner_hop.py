"""The replica -> runner hop, in its two halves, needing no cluster:

- the client: aiohttp (what the replica uses) against httpx (what it used before), each
  sending the same small JSON POST to one uvicorn on a unix socket serving a bare ASGI
  app, one request at a time, rounds interleaved;
- the app it reaches: the same aiohttp client against the bare ASGI app, fal's own
  FastAPI app for the bench's Echo app as fal builds it, the same app as a runner serves
  it (`tenantserve_runner.app.build`: fal's layers that do nothing in a runner left out),
  and that wrapped in the runner's request tagging (`logs.tag_requests`), each on its
  own uvicorn, one after another.

    python bench/runner_hop.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket as sock
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import uvicorn

from tenantserve.adapters.fal.supervisor import RUNNER_URL, runner_client

BODY = b'{"text": "hello"}'
HEADERS = {"content-type": "application/json", "x-fal-request-id": "bench"}
ECHO = Path(__file__).parent / "apps" / "echo.py"
APPS = ("bare ASGI app", "fal's app (Echo), as fal builds it", "the runner's fal app (idle layers left out)",
        "the runner's fal app + its request tagging")


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


def _app(kind: str):
    if kind == APPS[0]:
        return answer
    sys.modules["IPython"] = None  # as the runner keeps it out
    import fal.app

    fal.app._print_python_packages = lambda: None  # its startup line, once per server here
    from tenantserve_runner import app as runner_app
    from tenantserve_runner import logs

    if kind == APPS[1]:
        runner_app.IDLE_LAYERS = frozenset()
    _, app = runner_app.build(runner_app.load_class(str(ECHO), ECHO.read_text(), "echo", "Echo"))
    return logs.tag_requests(app) if kind == APPS[3] else app


def serve(socket: str, kind: str = APPS[0]) -> None:
    uvicorn.run(_app(kind), uds=socket, log_level="warning", access_log=False, lifespan="on")


@contextmanager
def serving(folder: str, kind: str) -> Iterator[tuple[str, int]]:
    """A uvicorn serving `kind` on a unix socket in `folder`, listening; its socket and pid,
    gone afterwards."""
    socket = str(Path(folder) / f"{APPS.index(kind)}.sock")
    server = multiprocessing.Process(target=serve, args=(socket, kind), daemon=True)
    server.start()
    try:
        while True:  # bound, then listening
            try:
                with sock.socket(sock.AF_UNIX) as probe:
                    probe.connect(socket)
                break
            except OSError:
                time.sleep(0.05)
        yield socket, server.pid
    finally:
        server.terminate()
        server.join()
        Path(socket).unlink(missing_ok=True)


async def one_app(socket: str, pid: int, requests: int) -> list[float]:
    client, latencies = runner_client(Path(socket), lambda: pid), []
    try:
        for i in range(requests + 100):
            started = time.perf_counter()
            response = await client.request("POST", RUNNER_URL + "/", data=BODY, headers=HEADERS, allow_redirects=False)
            await response.read()
            response.release()
            if i >= 100:
                latencies.append(time.perf_counter() - started)
    finally:
        await client.close()
    return latencies


async def measure(socket: str, pid: int, requests: int, rounds: int) -> dict[str, list[float]]:
    hx = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket), base_url="http://runner", timeout=None)
    ah = runner_client(Path(socket), lambda: pid)  # the replica's own client

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


def _row(name: str, values: list[float]) -> str:
    return f"| {name} | {statistics.median(values) * 1e3:.3f} | {statistics.quantiles(values, n=100)[98] * 1e3:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    by_app: dict[str, list[float]] = {kind: [] for kind in APPS}
    with tempfile.TemporaryDirectory() as folder:
        with serving(folder, APPS[0]) as (socket, pid):
            latencies = asyncio.run(measure(socket, pid, args.requests, args.rounds))
        for _ in range(args.rounds):
            for kind in APPS:
                with serving(folder, kind) as (socket, pid):
                    by_app[kind] += asyncio.run(one_app(socket, pid, args.requests))
    p50 = {name: statistics.median(values) * 1e3 for name, values in latencies.items()}
    print("| client | p50 ms | p99 ms |\n|---|---|---|")
    for name, values in latencies.items():
        print(_row(name, values))
    print(f"aiohttp / httpx p50: {p50['aiohttp (now)'] / p50['httpx (before)']:.2f}x\n")
    print("| app behind the socket (aiohttp) | p50 ms | p99 ms |\n|---|---|---|")
    for kind, values in by_app.items():
        print(_row(kind, values))
    bare = statistics.median(by_app[APPS[0]])
    print("; ".join(f"{kind}: {statistics.median(values) / bare:.2f}x the bare app" for kind, values in by_app.items()
                    if kind != APPS[0]))


if __name__ == "__main__":
    main()
