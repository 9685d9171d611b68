"""Memory of one idle app: its replica and its sandboxed runner (the platform's path) against
the same fal app served inside a Serve replica (the path before runners), on one platform,
in one run, each called a few times first. Proportional set size, so pages shared with
other processes (Ray's libraries, the interpreter) count once among all.

    python bench/replica_memory.py [--calls 50]

Goal (issue 15): replica and runner together at most 60 MB more than the replica alone
did before.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from baselines import run_in_replica  # noqa: E402
from common import BENCH, local_platform, platform, table, wait_ok  # noqa: E402

PAYLOAD = {"text": "hello"}


def pss_mb(pid: int) -> float:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")) / 1024


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        for child in map(int, text):
            found += [child, *children(child)]
    return found


def replica_pid(app: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and command_line(int(entry.name)).startswith(f"ray::ServeReplica:{app}:"):
            return int(entry.name)
    raise SystemExit(f"no replica process of {app}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    with local_platform() as base:
        platform("deploy", f"{BENCH}/apps/echo.py::Echo", "--auth", "public")
        targets = {"bench.echo": f"{base}/bench/echo/", "in-replica-echo": base + run_in_replica("in-replica-echo")}
        with httpx.Client(timeout=60) as client:
            for url in targets.values():
                wait_ok(url, PAYLOAD)
                for _ in range(args.calls):
                    client.post(url, json=PAYLOAD).raise_for_status()
        time.sleep(3)
        platform_replica = replica_pid("bench.echo")
        runner = children(platform_replica)
        before = pss_mb(replica_pid("in-replica-echo"))
        replica, runner_total = pss_mb(platform_replica), sum(pss_mb(pid) for pid in runner)
    rows = [
        ("fal app in the replica (before runners)", f"{before:.1f}"),
        ("tenantserve: the replica", f"{replica:.1f}"),
        (f"tenantserve: its runner ({len(runner)} processes: bubblewrap, the runner)", f"{runner_total:.1f}"),
        ("tenantserve: replica and runner", f"{replica + runner_total:.1f}"),
    ]
    print(table([("process", "PSS MB"), *rows]))
    print(f"replica and runner against the replica before: {replica + runner_total - before:+.1f} MB "
          f"({(replica + runner_total) / before:.2f}x)")


if __name__ == "__main__":
    main()
