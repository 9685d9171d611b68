"""Platform overhead: a trivial endpoint through tenantserve against the same endpoint on
bare Ray Serve (one app, `serve.run`, FastAPI ingress) and on plain uvicorn + FastAPI, in
one run of two phases: a cluster with Serve's default Python proxy (bare Serve's default,
the baseline), then one with the HAProxy ingress the platform runs by default. Each phase
interleaves its targets round by round; uvicorn runs in both, to show drift between them.

    python bench/overhead.py [--seconds 10] [--rounds 2] [--no-https]

With `--https` (the default) two more phases run the platform with a certificate, on each
ingress, beside plain uvicorn again (issue 17's goal: HTTPS p50 at most 1.5x plain HTTP's).

Goals (issue 7): the platform's p50 at most 0.30x and its throughput at least 2.5x of bare
Serve behind the default proxy, and its p50 at most 2x plain uvicorn's. Issue 15: through
the app's sandboxed runner, p50 at most 1.3x the app's fal FastAPI app served inside the
replica (the path before runners, without the platform's auth and metrics).
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __import__("os").path.dirname(__file__))
from baselines import plain_uvicorn, run_bare_serve, run_in_replica  # noqa: E402
from common import BENCH, free_port, load, local_platform, platform, self_signed_certificate, table, wait_ok  # noqa: E402

PAYLOAD = {"text": "hello"}
CLIENTS = (1, 16)


def https_phase(ingress: str, args: argparse.Namespace, results: dict) -> None:
    """The platform's trivial call over HTTPS (a self-signed certificate) on this ingress,
    beside plain uvicorn over HTTP to show drift against the plain-HTTP phases."""
    with tempfile.TemporaryDirectory() as folder:
        cert, key = self_signed_certificate(Path(folder))
        verify = ssl.create_default_context(cafile=str(cert))
        with local_platform("--ingress", ingress, "--tls-cert", str(cert), "--tls-key", str(key)) as base, \
                plain_uvicorn(free_port()) as uvicorn_url:
            platform("deploy", f"{BENCH}/apps/echo.py::Echo", "--auth", "public")
            targets = {f"platform ({ingress}, https)": (f"{base}/bench/echo/", verify),
                       f"plain uvicorn (during {ingress}, https)": (uvicorn_url, True)}
            for url, check in targets.values():
                wait_ok(url, PAYLOAD, verify=check)
            for _ in range(args.rounds):
                for clients in CLIENTS:
                    for name, (url, check) in targets.items():
                        results.setdefault((name, clients), []).append(
                            load(url, PAYLOAD, clients, args.seconds, verify=check))


def phase(ingress: str, args: argparse.Namespace, results: dict) -> None:
    """Measure the platform, bare Serve and uvicorn on a cluster with this ingress."""
    with local_platform("--ingress", ingress) as base, plain_uvicorn(free_port()) as uvicorn_url:
        platform("deploy", f"{BENCH}/apps/echo.py::Echo", "--auth", "public")
        targets = {
            f"platform ({ingress})": f"{base}/bench/echo/",
            f"bare Serve ({ingress})": base + run_bare_serve("bare-echo"),
            f"fal app in the replica ({ingress})": base + run_in_replica("in-replica-echo"),
            f"plain uvicorn (during {ingress})": uvicorn_url,
        }
        for url in targets.values():
            wait_ok(url, PAYLOAD)
        for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits all
            for clients in CLIENTS:
                for name, url in targets.items():
                    results.setdefault((name, clients), []).append(load(url, PAYLOAD, clients, args.seconds))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--https", action=argparse.BooleanOptionalAction, default=True,
                        help="Also measure the platform over HTTPS on both ingresses.")
    args = parser.parse_args()
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    phase("proxy", args, results)
    phase("haproxy", args, results)
    if args.https:
        https_phase("haproxy", args, results)
        https_phase("proxy", args, results)

    def best(name: str, clients: int, key: str) -> float:
        values = [r[key] for r in results[(name, clients)]]
        return min(values) if key.endswith("_ms") else max(values)

    names = list(dict.fromkeys(name for name, _ in results))
    rows = [("clients", "target", "p50 ms", "p99 ms", "req/s")]
    for clients in CLIENTS:
        for name in names:
            rows.append((str(clients), name, f"{best(name, clients, 'p50_ms'):.2f}",
                         f"{best(name, clients, 'p99_ms'):.2f}", f"{best(name, clients, 'rps'):.0f}"))
    print(table(rows))
    print()
    ours = "platform (haproxy)"
    for clients in CLIENTS:
        for baseline in ("bare Serve (proxy)", "bare Serve (haproxy)", "plain uvicorn (during haproxy)",
                         "fal app in the replica (haproxy)", ours.replace("haproxy", "proxy")):
            latency = best(ours, clients, "p50_ms") / best(baseline, clients, "p50_ms")
            throughput = best(ours, clients, "rps") / best(baseline, clients, "rps")
            print(f"{clients:>2} client(s): {ours} / {baseline}: p50 latency {latency:.2f}x, "
                  f"throughput {throughput:.2f}x")
    for ingress in ("haproxy", "proxy") if args.https else ():
        for clients in CLIENTS:
            https, http = f"platform ({ingress}, https)", f"platform ({ingress})"
            print(f"{clients:>2} client(s): {https} / {http}: p50 latency "
                  f"{best(https, clients, 'p50_ms') / best(http, clients, 'p50_ms'):.2f}x, throughput "
                  f"{best(https, clients, 'rps') / best(http, clients, 'rps'):.2f}x")


if __name__ == "__main__":
    main()
