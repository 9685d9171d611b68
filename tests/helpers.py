"""Helpers for tests that look at the session's cluster directly."""

from __future__ import annotations

from typing import Any


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
