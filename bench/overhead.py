"""Platform overhead: a trivial endpoint through tenantserve against the same endpoint on
bare Ray Serve (one app, `serve.run`, FastAPI ingress) on the same cluster, and on plain
uvicorn + FastAPI, in one run.

    python bench/overhead.py [--seconds 10]

Goal: platform p50 <= 1.10x bare Serve and throughput >= 0.90x, at 1 and 16 clients. The
uvicorn figure shows what Serve's default proxy costs over a plain ASGI server.
"""

from __future__ import annotations

import argparse
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from baselines import plain_uvicorn, run_bare_serve  # noqa: E402
from common import BENCH, free_port, load, local_platform, platform, table, wait_ok  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    payload = {"text": "hello"}
    with local_platform() as base, plain_uvicorn(free_port()) as uvicorn_url:
        platform("deploy", f"{BENCH}/apps/echo.py::Echo", "--auth", "public")
        targets = {
            "platform": f"{base}/bench/echo/",
            "bare Serve": base + run_bare_serve("bare-echo"),
            "plain uvicorn": uvicorn_url,
        }
        for url in targets.values():
            wait_ok(url, payload)
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits both
            for clients in (1, 16):
                for name, url in targets.items():
                    results.setdefault((name, clients), []).append(load(url, payload, clients, args.seconds))

    def best(name: str, clients: int, key: str) -> float:
        values = [r[key] for r in results[(name, clients)]]
        return min(values) if key.endswith("_ms") else max(values)

    rows = [("clients", "target", "p50 ms", "p99 ms", "req/s")]
    for clients in (1, 16):
        for name in targets:
            rows.append((str(clients), name, f"{best(name, clients, 'p50_ms'):.2f}",
                         f"{best(name, clients, 'p99_ms'):.2f}", f"{best(name, clients, 'rps'):.0f}"))
    print(table(rows))
    print()
    for clients in (1, 16):
        for baseline in ("bare Serve", "plain uvicorn"):
            latency = best("platform", clients, "p50_ms") / best(baseline, clients, "p50_ms")
            throughput = best("platform", clients, "rps") / best(baseline, clients, "rps")
            print(f"{clients:>2} client(s): platform / {baseline}: p50 latency {latency:.2f}x, "
                  f"throughput {throughput:.2f}x")


if __name__ == "__main__":
    main()
