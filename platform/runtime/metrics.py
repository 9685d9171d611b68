"""Per-tenant, per-app metrics, exported through Ray's metrics agent in Prometheus format
(each node's `--metrics-export-port`; Ray prefixes the names with `ray_`).

Each replica records its own requests and its start; Serve's own metrics (queue depth,
replica health, proxy latency) carry the same app as `application="<tenant>.<app>"`.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from ray.util.metrics import Counter, Gauge, Histogram

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
START_BOUNDARIES = [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]
UNCOUNTED_PATHS = ("/health",)  # the platform's own readiness probe


def _process_age_s() -> Optional[float]:
    """Seconds since this worker process started (Linux), so a cold start counts the
    worker's start and imports too, not only setup()."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK"))


class AppMetrics:
    """The metrics of one app's replica; create it in the replica process."""

    def __init__(self, tenant: str, app: str, replica: str) -> None:
        app_tags = {"tenant": tenant, "app": app}
        replica_tags = {**app_tags, "replica": replica}
        self.requests = Counter("tenantserve_requests", "Requests answered, by status code.",
                                tag_keys=("tenant", "app", "code"))
        self.errors = Counter("tenantserve_request_errors", "Requests answered with a 4xx or 5xx status.",
                              tag_keys=("tenant", "app", "code"))
        self.latency = Histogram("tenantserve_request_duration_seconds", "Time to answer a request, in the replica.",
                                 boundaries=LATENCY_BOUNDARIES, tag_keys=("tenant", "app"))
        self.in_flight = Gauge("tenantserve_requests_in_flight", "Requests a replica is working on.",
                               tag_keys=("tenant", "app", "replica"))
        self.replicas = Gauge("tenantserve_replicas_running", "1 while a replica serves, 0 once it stopped.",
                              tag_keys=("tenant", "app", "replica"))
        self.cold_starts = Counter("tenantserve_cold_starts", "Replicas started (from zero or to scale up).",
                                   tag_keys=("tenant", "app"))
        self.cold_start_seconds = Histogram(
            "tenantserve_cold_start_duration_seconds",
            "From the replica's process start to ready: worker start, imports and setup().",
            boundaries=START_BOUNDARIES, tag_keys=("tenant", "app"))
        self.setup_seconds = Histogram("tenantserve_setup_duration_seconds", "Time spent in the app's setup().",
                                       boundaries=START_BOUNDARIES, tag_keys=("tenant", "app"))
        for metric in (self.requests, self.errors, self.latency, self.cold_starts, self.cold_start_seconds,
                       self.setup_seconds):
            metric.set_default_tags(app_tags)
        for metric in (self.in_flight, self.replicas):
            metric.set_default_tags(replica_tags)
        self._active = 0
        self._serving = False

    def replica_ready(self, setup_s: float) -> None:
        self.cold_starts.inc()
        self.setup_seconds.observe(setup_s)
        age = _process_age_s()
        self.cold_start_seconds.observe(age if age is not None else setup_s)
        self._serving = True
        self.replicas.set(1)
        self.in_flight.set(0)

    def replica_stopped(self) -> None:
        self._serving = False
        self.replicas.set(0)

    async def keep_gauges_fresh(self, every_s: float = 5.0) -> None:
        """Set the gauges again while the replica serves: Ray's metrics agent drops a gauge's
        series that has not been reported for two export intervals (a loaded node's late
        export), and a gauge set once would then stay missing."""
        while self._serving:
            await asyncio.sleep(every_s)
            if self._serving:
                self.replicas.set(1)
                self.in_flight.set(self._active)

    def answered(self, code: int, seconds: float) -> None:
        """Count one answered request (HTTP ones are counted by `wrap`)."""
        tags = {"code": str(code)}
        self.requests.inc(tags=tags)
        if code >= 400:
            self.errors.inc(tags=tags)
        self.latency.observe(seconds)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """An ASGI app that counts, times and tracks every HTTP request to `app`."""

        async def measured(scope: dict, receive: Any, send: Any) -> None:
            path, root = scope.get("path", ""), scope.get("root_path", "")
            path = path[len(root):] if root and path.startswith(root) else path
            if scope["type"] != "http" or path in UNCOUNTED_PATHS:
                await app(scope, receive, send)
                return
            status = {"code": 500}

            async def tracking_send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            started = time.perf_counter()
            self._active += 1
            self.in_flight.set(self._active)
            try:
                await app(scope, receive, tracking_send)
            finally:
                self._active -= 1
                self.in_flight.set(self._active)
                self.answered(status["code"], time.perf_counter() - started)

        return measured
