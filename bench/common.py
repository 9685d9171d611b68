"""Shared pieces of the benchmarks: a throwaway platform, a load generator, a report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

BENCH = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def platform(*args: str) -> str:
    exe = str(Path(sys.executable).parent / "platform")
    result = subprocess.run([exe, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"platform {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def local_platform(*up_args: str) -> Iterator[str]:
    """A platform of its own (state, Ray and HTTP ports) for one benchmark run; yields its URL.
    `up_args` go to `platform up` (`--ingress proxy`, say)."""
    with tempfile.TemporaryDirectory() as home:
        os.environ["TENANTSERVE_HOME"] = home
        os.environ["TENANTSERVE_USER"] = "bench"  # the fresh platform's first admin, who deploys
        os.environ.pop("RAY_ADDRESS", None)
        os.environ.pop("TENANTSERVE_KEY", None)
        platform("up", f"--port={free_port()}", f"--http-port={free_port()}", f"--dashboard-port={free_port()}", *up_args)
        from tenantserve.platform.cluster.ray_cluster import connect

        connect(start=False)  # this process drives Serve too (the bare baseline apps)
        try:
            yield json.loads((Path(home) / "cluster.json").read_text())["http_url"]
        finally:
            from tenantserve.platform.cluster.ray_cluster import down

            down()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key, and that key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def wait_ok(url: str, payload: dict, timeout: float = 60, verify: Any = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(url, json=payload, timeout=10, verify=verify).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


async def _load(url: str, payload: dict, clients: int, seconds: float, verify: Any) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30, verify=verify) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = await client.post(url, json=payload)
                if response.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors


def load(url: str, payload: dict, clients: int, seconds: float, verify: Any = True) -> dict[str, float]:
    """p50/p99 latency (ms) and throughput (req/s) of `clients` closed-loop clients (on
    kept-alive connections, so an HTTPS client pays its handshakes once)."""
    asyncio.run(_load(url, payload, clients, 1.0, verify))  # warm up connections and replicas
    latencies, errors = asyncio.run(_load(url, payload, clients, seconds, verify))
    if errors:
        raise SystemExit(f"{errors} failed requests to {url}")
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rps": len(latencies) / seconds,
    }


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)
