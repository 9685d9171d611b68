"""Changes to Ray Serve's internals (Ray 2.60, pinned) that every Ray worker on the
platform's nodes applies as it starts: `cluster.PRELOAD` names `coldstart`, which imports
this module, in Ray's `preload_python_modules` setting, so Serve's controller, its proxy
and every replica run with them. Each patch says what Serve does without it; each is
applied once and only to the names it expects (a Serve upgrade that renames them fails
at import, not at run time).

The router patches make a wake-up from zero carry its request (cold starts) and quiet
idle handles; the replica patch counts requests waiting in a replica (HAProxy ingress) as
load, so apps scale out; the controller patches remove the work Serve's controller
repeated every 0.1 s for every app, idle or not (reconciling it, deciding its scale,
rebuilding HAProxy's view of it), and let its loop wait while nothing is happening.
Together they took a node with 200 idle apps from 44 % idle CPU to under 10 %, measured
with `bench/density.py`; `bench/coldstart.py` checks wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from typing import Any, Callable, NamedTuple, Optional

# isort: split
import tenantserve.platform.cluster.ray_private  # noqa: F401  (checks Ray's version before its private names)

# isort: split
from ray.serve._private.application_state import ApplicationState
from ray.serve._private.autoscaling_state import AutoscalingStateManager
from ray.serve._private.common import RUNNING_REQUESTS_KEY, DeploymentID, ReplicaState
from ray.serve._private.constants import RAY_SERVE_ENABLE_HA_PROXY
from ray.serve._private.controller import ServeController
from ray.serve._private.metrics_utils import MetricsPusher, _MetricsTask
from ray.serve._private.proxy import HTTPProxy
from ray.serve._private.replica import Replica, ReplicaMetricsManager
from ray.serve._private.router import RouterMetricsManager
from ray.serve._private.utils import is_grpc_enabled
from ray.serve.schema import ApplicationStatus, ProxyStatus

from tenantserve.platform.cluster.proxy_gate import ProxyGate, tenant_app
from tenantserve.platform.runtime.auth import not_load_in_flight

_PATCHED = "_tenantserve_patched"
QUIET_INTERVAL_S = 1.0
SETTLED_LOOP_S = 1.0


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
      until its next request; the controller counts a handle it has not heard from as 0.
      Its two timers then wake once a second (QUIET_INTERVAL_S) instead of five times: the
      wake-up push above does not wait for them, and the next sample follows within it."""
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

    register = MetricsPusher.register_or_update_task

    def register_slow_when_quiet(self: MetricsPusher, name: str, task_func: Any, interval_s: float) -> None:
        router = getattr(task_func, "__self__", None)
        register(self, name, task_func, interval_s)
        if isinstance(router, RouterMetricsManager):
            self._tasks[name] = _SlowWhenQuiet(task_func, interval_s, router)

    setattr(push_current, _PATCHED, True)
    RouterMetricsManager.push_autoscaling_metrics_to_controller = push_current  # type: ignore[method-assign]
    RouterMetricsManager._add_autoscaling_metrics_point = sample_unless_quiet  # type: ignore[method-assign]
    MetricsPusher.register_or_update_task = register_slow_when_quiet  # type: ignore[method-assign]


class _SlowWhenQuiet(_MetricsTask):
    """A handle's metrics timer whose interval, read before each sleep, is QUIET_INTERVAL_S
    while the handle is quiet."""

    def __init__(self, task_func: Any, interval_s: float, router: RouterMetricsManager) -> None:
        self.task_func, self._interval_s, self._router = task_func, interval_s, router

    @property  # type: ignore[override]
    def interval_s(self) -> float:
        return QUIET_INTERVAL_S if _quiet(self._router) else self._interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self._interval_s = value


def _patch_controller_target_groups() -> None:
    """With the HAProxy ingress, Serve's controller rebuilds HAProxy's target groups on
    every loop (every 0.1 s): for each app, the running replicas of its ingress
    deployment. It found them by listing the running replicas of every deployment, and
    copied the app's deployment details even when it had none running: work in the square
    of the number of apps, half the controller's idle CPU at 50 apps. This looks up the
    one deployment, and copies details only for replicas that run. An app with none
    running gets the same (empty) groups as last time, not equal new ones, so that the
    controller's check for a change compares them by identity."""
    original = ServeController._get_running_replica_details_for_deployment
    if getattr(original, _PATCHED, False):
        return

    def running_replica_details(self: ServeController, app_name: str, deployment_name: str) -> list[Any]:
        deployment_id = DeploymentID(app_name=app_name, name=deployment_name)
        state = self.deployment_state_manager._deployment_states.get(deployment_id)
        by_state = state._replicas._replicas if state else {}
        if not (by_state.get(ReplicaState.RUNNING) or by_state.get(ReplicaState.PENDING_MIGRATION)):
            return []
        running = {info.replica_id.unique_id for info in state.get_running_replica_infos()}
        details = self.deployment_state_manager.get_deployment_details(deployment_id)
        return [replica for replica in details.replicas if replica.replica_id in running] if details else []

    without_replicas = ServeController._get_target_groups_for_app_with_no_running_replicas
    remembered: dict[tuple[Any, ...], list[Any]] = {}

    def same_groups_without_replicas(self: ServeController, route_prefix: str, app_name: str) -> list[Any]:
        if not self._ha_proxy_enabled:  # then they list the proxies, which change
            return without_replicas(self, route_prefix, app_name)
        key = (route_prefix, app_name, self.application_state_manager.get_ingress_deployment_name(app_name),
               is_grpc_enabled(self.get_grpc_config()))
        if key not in remembered:
            remembered[key] = without_replicas(self, route_prefix, app_name)
        return remembered[key]

    setattr(running_replica_details, _PATCHED, True)
    ServeController._get_running_replica_details_for_deployment = running_replica_details  # type: ignore[method-assign]
    ServeController._get_target_groups_for_app_with_no_running_replicas = (  # type: ignore[method-assign]
        same_groups_without_replicas)


def _patch_replica_load() -> None:
    """With the HAProxy ingress a replica serves HTTP itself, and HAProxy hands it every
    request routed to it: those beyond `max_ongoing_requests` wait inside the replica for
    a slot. Serve's replica reports count only the requests running, so a replica with two
    running and six waiting told the autoscaler "2 of a target of 2" and the app never
    scaled up. Each sample also counts the waiting ones (Serve's own proxy queues them in
    its handle instead, which reports them). Requests the app's ingress is refusing (a
    missing or wrong key) or answering `GET /health` for count as none: anonymous calls
    every few seconds kept a private app's replica from ever scaling down."""
    sample = ReplicaMetricsManager._add_autoscaling_metrics_point_async
    if getattr(sample, _PATCHED, False):
        return
    init = Replica.__init__

    def init_linking_load(self: Replica, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._metrics_manager._tenantserve_replica = self  # type: ignore[attr-defined]

    async def sample_running_and_waiting(self: ReplicaMetricsManager) -> None:
        if self._custom_metrics_enabled or not self.should_collect_ongoing_requests():
            await sample(self)  # Serve's own sample: an app with custom metrics keeps them
            return
        replica = getattr(self, "_tenantserve_replica", None)
        waiting = replica._num_queued_requests if replica is not None else 0
        running = max(0, self._num_ongoing_requests - not_load_in_flight())
        self._metrics_store.add_metrics_point({RUNNING_REQUESTS_KEY: running + waiting}, time.time())

    setattr(sample_running_and_waiting, _PATCHED, True)
    Replica.__init__ = init_linking_load  # type: ignore[method-assign]
    ReplicaMetricsManager._add_autoscaling_metrics_point_async = sample_running_and_waiting  # type: ignore[method-assign]


def _deployment_states(app: ApplicationState) -> Optional[tuple[Any, ...]]:
    """The app's deployments as the controller holds them: each one's state, its target
    (replaced whenever its deploy info, replica count or deletion changes) and the routes
    its replicas reported. None when one is missing."""
    states = app._deployment_state_manager._deployment_states
    found: list[Any] = []
    for name in app.target_deployments:
        state = states.get(DeploymentID(name=name, app_name=app._name))
        if state is None:
            return None
        found += (state, state._target_state, state._route_patterns)
    return tuple(found)


def _same(remembered: Any, now: Any) -> bool:
    """Equal, with the controller's objects compared by identity: it replaces what it
    changes, so a new object means a change even when its fields compare equal."""
    if isinstance(remembered, tuple) and isinstance(now, tuple):
        return len(remembered) == len(now) and all(_same(old, new) for old, new in zip(remembered, now))
    if isinstance(now, (bool, int, float, str, type(None))):
        return remembered == now
    return remembered is now


def _reconcile_key(app: ApplicationState) -> Optional[tuple[Any, ...]]:
    deployments = _deployment_states(app)
    if deployments is None or app._target_state.deployment_infos is None:
        return None
    return (app._target_state, tuple(sorted(app._get_live_deployments())), deployments)


def _patch_app_reconcile() -> None:
    """Serve's controller reconciles every app with its target every loop (every 0.1 s):
    it deep-copies each deployment's info and applies it, which changes nothing unless the
    target, the app's live deployments or a deployment's state changed. With 200 idle apps
    that copy was a third of the controller's CPU. This skips the apply while none of
    those changed since one that changed nothing."""
    original = ApplicationState._reconcile_target_deployments
    if getattr(original, _PATCHED, False):
        return

    def reconcile_on_change(self: ApplicationState) -> bool:
        key = _reconcile_key(self)
        if key is not None and _same(getattr(self, "_tenantserve_reconciled", None), key):
            return False
        changed = original(self)
        self._tenantserve_reconciled = None if changed else _reconcile_key(self)  # type: ignore[attr-defined]
        return changed

    setattr(reconcile_on_change, _PATCHED, True)
    ApplicationState._reconcile_target_deployments = reconcile_on_change  # type: ignore[method-assign]


class _ReportKind(NamedTuple):
    """How one kind of autoscaling report names its app and says whether it counts requests."""

    app_name: Callable[[Any], str]
    carries_load: Callable[[Any], bool]


_REPORT_KINDS = {
    "record_request_metrics_for_replica": _ReportKind(
        lambda report: report.replica_id.deployment_id.app_name,
        lambda report: any(point.value for series in report.metrics.values() for point in series)),
    "record_request_metrics_for_handle": _ReportKind(
        lambda report: report.deployment_id.app_name,
        lambda report: report.total_requests > 0),
    "record_columnar_metrics_for_handle": _ReportKind(
        lambda report: report["deployment_id"].app_name,
        lambda report: bool(report["q_val"].any() or report["val"].any())),
}


def _patch_autoscale_at_rest() -> None:
    """Serve's controller runs the autoscaling policy of every deployment every loop. A
    deployment at its lower bound whose last decision counted no requests cannot change
    until a handle or replica reports again (the policy scales on reported requests), so
    an app whose deployments all rest is skipped until a report for it arrives or its
    deployments change. Apps with their own app-level policy are always decided."""
    original = ApplicationState.autoscale
    if getattr(original, _PATCHED, False):
        return
    reports: dict[str, int] = {}

    def counting(record: Any, kind: _ReportKind) -> Any:
        def record_and_count(self: AutoscalingStateManager, report: Any) -> Any:
            app_name = kind.app_name(report)
            reports[app_name] = reports.get(app_name, 0) + 1
            if kind.carries_load(report):
                _wake_control_loop()
            return record(self, report)
        return record_and_count

    for name, kind in _REPORT_KINDS.items():
        setattr(AutoscalingStateManager, name, counting(getattr(AutoscalingStateManager, name), kind))

    def resting(app: ApplicationState) -> bool:
        manager = app._autoscaling_state_manager
        if manager._application_has_policy(app._name):
            return False
        for name in app.target_deployments:
            deployment_id = DeploymentID(name=name, app_name=app._name)
            state = manager._app_autoscaling_states[app._name]._deployment_autoscaling_states.get(deployment_id)
            target = app._deployment_state_manager.get_deployment_target_num_replicas(deployment_id)
            if state is None or target is None or target != state.get_num_replicas_lower_bound() \
                    or state.get_last_decision_total_num_requests() != 0:
                return False
        return True

    def autoscale_unless_resting(self: ApplicationState) -> bool:
        now = (reports.get(self._name, 0), _deployment_states(self))
        if now[1] is not None and _same(getattr(self, "_tenantserve_resting", None), now):
            return False
        changed = original(self)
        self._tenantserve_resting = None if changed or not resting(self) else (  # type: ignore[attr-defined]
            reports.get(self._name, 0), _deployment_states(self))
        return changed

    setattr(autoscale_unless_resting, _PATCHED, True)
    ApplicationState.autoscale = autoscale_unless_resting  # type: ignore[method-assign]


class _Wake:
    """The controller's wake-up call: set from its RPC handlers, awaited by its loop."""

    loop: Optional[asyncio.AbstractEventLoop] = None
    event: Optional[asyncio.Event] = None


def _wake_control_loop() -> None:
    if _Wake.loop is not None and _Wake.event is not None:
        _Wake.loop.call_soon_threadsafe(_Wake.event.set)


def _settled(controller: ServeController) -> bool:
    """Nothing for the controller to do until something tells it: every app runs and
    rests (or does not autoscale), every deployment has its target of replicas, all
    running, and every proxy (HAProxy's fallback proxy too) is healthy, none stopping."""
    if controller._shutting_down or not controller.done_recovering_event.is_set():
        return False
    for app in controller.application_state_manager._application_states.values():
        if app.status != ApplicationStatus.RUNNING:
            return False
        if app.should_autoscale() and getattr(app, "_tenantserve_resting", None) is None:
            return False
    for state in controller.deployment_state_manager._deployment_states.values():
        by_state = state._replicas._replicas
        if any(replicas for kind, replicas in by_state.items() if kind != ReplicaState.RUNNING):
            return False
        if len(by_state.get(ReplicaState.RUNNING, ())) != state._target_state.target_num_replicas:
            return False
    proxies = controller.proxy_state_manager
    if proxies is None:
        return True
    if proxies._stopping_proxy_states:
        return False
    fallback = [proxies._fallback_proxy_state] if proxies._fallback_proxy_state is not None else []
    return all(proxy.status == ProxyStatus.HEALTHY for proxy in [*proxies._proxy_states.values(), *fallback])


def _patch_control_loop() -> None:
    """Serve's controller runs its loop every 0.1 s (reconcile, autoscale, health checks,
    routing tables) whether or not anything happens; with the patches above each idle loop
    is cheap, but 200 apps still cost a few percent of the node. Once everything is
    settled, the loop waits up to SETTLED_LOOP_S between steps, and any call that can
    change something ends the wait at once: a deploy, delete or scale request, or an
    autoscaling report that counts requests (the first request to an app at zero is one).
    Health checks and node changes are then noticed within SETTLED_LOOP_S instead of 0.1 s."""
    step = ServeController.run_control_loop_step
    if getattr(step, _PATCHED, False):
        return

    async def step_then_wait_while_settled(self: ServeController, *args: Any) -> None:
        await step(self, *args)
        if _Wake.event is None:
            _Wake.loop, _Wake.event = asyncio.get_running_loop(), asyncio.Event()
        if _settled(self):
            _Wake.event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_Wake.event.wait(), SETTLED_LOOP_S)

    def waking(method: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(method):
            @functools.wraps(method)
            async def wake_on_first_wait(self: ServeController, *args: Any, **kwargs: Any) -> Any:
                _wake_control_loop()  # the loop's next turn: after the call's first step
                return await method(self, *args, **kwargs)
            return wake_on_first_wait

        @functools.wraps(method)
        def call_then_wake(self: ServeController, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            finally:
                _wake_control_loop()
        return call_then_wake

    for name in ("deploy_applications", "deploy_application", "apply_config", "delete_apps",
                 "update_deployment_replicas", "reconfigure_global_logging_config",
                 "record_request_routing_info", "graceful_shutdown"):
        setattr(ServeController, name, waking(getattr(ServeController, name)))
    setattr(step_then_wait_while_settled, _PATCHED, True)
    ServeController.run_control_loop_step = step_then_wait_while_settled  # type: ignore[method-assign]


def _running_replicas(handle: Any) -> Optional[int]:
    """How many replicas an app has, as this proxy sees it; None if it has not heard yet.
    Behind HAProxy the proxy is HAProxy's fallback, which gets an app's requests only
    while HAProxy has no replica of it (its own handle may still list one that is
    stopping): 0."""
    if RAY_SERVE_ENABLE_HA_PROXY:
        return 0
    router = getattr(getattr(handle, "_router", None), "_asyncio_router", None)
    running = getattr(router, "_running_replicas", None)
    return None if running is None else len(running)


def _patch_proxy_gate() -> None:
    """Serve's HTTP proxy sends every request on to the app's replicas, waking one from
    zero if need be. Before a request to a tenant's app, it asks the platform's gate
    (proxy_gate.py), which answers refusals (and, at zero replicas, the health check)
    itself, so that they wake nothing."""
    call = HTTPProxy.__call__
    if getattr(call, _PATCHED, False):
        return
    gate = ProxyGate()

    async def gated(self: HTTPProxy, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            matched = self.proxy_router.match_route(scope["path"][len(scope.get("root_path", "")):])
            if matched is not None:
                route_prefix, handle, _ = matched
                ref = tenant_app(route_prefix, handle.deployment_id.app_name)
                if ref is not None and await gate.answer(scope, receive, send, route_prefix, *ref,
                                                         _running_replicas(handle)):
                    return
        await call(self, scope, receive, send)

    setattr(gated, _PATCHED, True)
    HTTPProxy.__call__ = gated  # type: ignore[method-assign]


_patch_router_metrics()
_patch_replica_load()
_patch_controller_target_groups()
_patch_app_reconcile()
_patch_autoscale_at_rest()
_patch_control_loop()
_patch_proxy_gate()
