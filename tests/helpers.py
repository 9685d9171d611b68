"""Helpers for tests that look at the session's cluster directly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable


def serve_connected() -> Any:
    """Ray Serve's API, on the session's cluster: this process connects to it first, so that
    no Serve call starts a private Ray instance of its own."""
    from tenantserve.platform.cluster import connect

    connect(start=False)
    from ray import serve

    return serve


def running_replicas(app_name: str) -> int:
    """Replicas of a Serve app that run or are starting (0 for an app Serve does not have)."""
    app = serve_connected().status().applications.get(app_name)
    if app is None:
        return 0
    return sum(n for d in app.deployments.values() for state, n in d.replica_states.items()
               if state in ("RUNNING", "STARTING"))


def replica_pids(app_name: str) -> list[int]:
    """The processes of a Serve app's live replicas: the Ray workers, not their runners."""
    serve_connected()
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
    return [a.pid for a in actors if (a.name or "").startswith(f"SERVE_REPLICA::{app_name}#")]


PLATFORM = str(Path(sys.executable).parent / "platform")


def laptop_env(base_url: str, key: str, home: Path) -> dict[str, str]:
    """A shell on another machine: the platform's URL and a key, nothing of this one's."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "TENANTSERVE_URL": base_url, "TENANTSERVE_KEY": key}


def laptop_cli(env: dict[str, str], timeout: float = 600) -> Callable[..., str]:
    """`platform(*args, ok=True)` in that shell: its output, asserting how it exited."""

    def platform(*args: str, ok: bool = True) -> str:
        result = subprocess.run([PLATFORM, *args], capture_output=True, text=True, env=env, timeout=timeout)
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return result.stdout + result.stderr

    return platform
