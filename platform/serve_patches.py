"""Changes to Ray Serve's internals (Ray 2.60, pinned) that every Ray worker on the
platform's nodes applies as it starts: `cluster.PRELOAD` names `coldstart`, which imports
this module, in Ray's `preload_python_modules` setting, so Serve's controller, its proxy
and every replica run with them. Each patch says what Serve does without it; each is
applied once and only to the names it expects (a Serve upgrade that renames them fails
at import, not at run time).

The router patches make a wake-up from zero carry its request (cold starts) and quiet
idle handles; the controller patch removes work that grew with the square of the number
of apps. Both were measured with `bench/coldstart.py` and `bench/density.py`.
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve._private.common import DeploymentID
from ray.serve._private.controller import ServeController
from ray.serve._private.router import RouterMetricsManager

_PATCHED = "_tenantserve_patched"


def _idle_for(router: RouterMetricsManager) -> float:
    """Seconds this handle has had nothing queued or in flight (0 while it has)."""
    now = time.monotonic()
    if router.num_queued_requests > 0 or any(router.num_requests_sent_to_replicas.values()):
        router._tenantserve_idle_since = None  # type: ignore[attr-defined]
        return 0.0
    since = getattr(router, "_tenantserve_idle_since", None)
    if since is None:
        since = router._tenantserve_idle_since = now  # type: ignore[attr-defined]
    return now - since


def _quiet(router: RouterMetricsManager) -> bool:
    """Idle for two look-back windows: the controller's last report from this handle is
    all zeros, so samples and pushes add nothing until a request comes."""
    config = router.autoscaling_config
    return config is not None and _idle_for(router) > 2 * config.look_back_period_s + 1


def _patch_router_metrics() -> None:
    """Two changes to how a Serve handle reports to the autoscaler (Serve's proxy holds one
    handle per app, so they matter most with many apps):

    - Serve's router pushes its sampled metrics; sample before a push made while
      requests wait, so that the push meant to wake a deployment at zero says so.
    - An idle handle samples every 0.2 s and pushes every 0.2 s (the apps' metrics
      interval), forever: with 50 idle apps that was a quarter of the node's CPU in the
      controller and a tenth in the proxy. A handle idle for two look-back windows stops
      until its next request; the controller counts a handle it has not heard from as 0."""
    push = RouterMetricsManager.push_autoscaling_metrics_to_controller
    sample = RouterMetricsManager._add_autoscaling_metrics_point
    if getattr(push, _PATCHED, False):
        return

    def push_current(self: RouterMetricsManager) -> None:
        if self.num_queued_requests > 0 and self.autoscaling_config is not None:
            sample(self)
        if not _quiet(self):
            push(self)

    def sample_unless_quiet(self: RouterMetricsManager) -> None:
        if not _quiet(self):
            sample(self)

    setattr(push_current, _PATCHED, True)
    RouterMetricsManager.push_autoscaling_metrics_to_controller = push_current  # type: ignore[method-assign]
    RouterMetricsManager._add_autoscaling_metrics_point = sample_unless_quiet  # type: ignore[method-assign]


def _patch_controller_target_groups() -> None:
    """With the HAProxy ingress, Serve's controller rebuilds HAProxy's target groups on
    every loop (every 0.1 s): for each app, the running replicas of its ingress
    deployment. It found them by listing the running replicas of every deployment, and
    copied the app's deployment details even when it had none running: work in the square
    of the number of apps, half the controller's idle CPU at 50 apps. This looks up the
    one deployment, and copies details only for replicas that run."""
    original = ServeController._get_running_replica_details_for_deployment
    if getattr(original, _PATCHED, False):
        return

    def running_replica_details(self: ServeController, app_name: str, deployment_name: str) -> list[Any]:
        deployment_id = DeploymentID(app_name=app_name, name=deployment_name)
        state = self.deployment_state_manager._deployment_states.get(deployment_id)
        running = {info.replica_id.unique_id for info in state.get_running_replica_infos()} if state else set()
        if not running:
            return []
        details = self.deployment_state_manager.get_deployment_details(deployment_id)
        return [replica for replica in details.replicas if replica.replica_id in running] if details else []

    setattr(running_replica_details, _PATCHED, True)
    ServeController._get_running_replica_details_for_deployment = running_replica_details  # type: ignore[method-assign]


_patch_router_metrics()
_patch_controller_target_groups()
