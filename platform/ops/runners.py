"""Runners: the replicas serving an app, as Ray's state API sees them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import ray
from ray.util.state import list_actors, list_workers

from tenantserve.platform.cluster.ray_cluster import state_api_address
from tenantserve.platform.core.naming import serve_app_name

_PREFIX = "SERVE_REPLICA::"


class RunnerError(ValueError):
    """No such runner, or not the caller's."""


@dataclass(frozen=True)
class Runner:
    id: str
    app: str
    state: str
    node_id: Optional[str]  # None while the replica waits for a node
    pid: Optional[int]
    uptime_s: Optional[float]


def _replica_actors(owner: str, app: Optional[str] = None) -> list:  # list[ActorState]
    prefix = f"{_PREFIX}{serve_app_name(owner, app)}#" if app else f"{_PREFIX}{owner}."
    actors = list_actors(address=state_api_address(), filters=[("state", "!=", "DEAD")], detail=True, limit=10_000, raise_on_missing_output=False)
    return [a for a in actors if a.name and a.name.startswith(prefix) and a.ray_namespace == "serve"]


def list_runners(owner: str, app: str) -> list[Runner]:
    actors = _replica_actors(owner, app)
    started = {}
    if actors:
        workers = list_workers(address=state_api_address(), filters=[("worker_type", "=", "WORKER")], detail=True, limit=10_000,
                               raise_on_missing_output=False)
        started = {(w.node_id, w.pid): w.start_time_ms for w in workers if w.start_time_ms}
    now_ms = time.time() * 1000
    return [
        Runner(
            id=actor.name.rsplit("#", 1)[1],
            app=f"{owner}/{app}",
            state=actor.state,
            node_id=actor.node_id,
            pid=actor.pid,
            uptime_s=(now_ms - started[(actor.node_id, actor.pid)]) / 1000 if (actor.node_id, actor.pid) in started else None,
        )
        for actor in sorted(actors, key=lambda a: a.name)
    ]


def kill_runner(owner: str, runner_id: str) -> str:
    """Stop one of the owner's replicas; Serve starts a new one if the app is below its minimum.
    Returns the app it belonged to."""
    for actor in _replica_actors(owner):
        if actor.name.endswith(f"#{runner_id}"):
            ray.kill(ray.get_actor(actor.name, namespace="serve"), no_restart=True)
            app = actor.name[len(_PREFIX):].split("#", 1)[0]
            return app.replace(".", "/", 1)
    raise RunnerError(f"{owner} has no runner {runner_id!r}")
