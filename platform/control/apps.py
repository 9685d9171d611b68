"""Deploy, list and delete apps on Serve, each at `/<user>/<app>` on the platform's HTTP port.

A deploy either ends with the new revision answering, or with the reason it failed and
the app as it was before: a first deploy that fails leaves nothing behind, a redeploy that
fails leaves the previous revision serving.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import httpx
import ray
from ray import serve
from ray.serve import RunTarget

from tenantserve.adapters.fal.bundle import AppBundle
from tenantserve.adapters.fal.deployment import to_application
from tenantserve.adapters.fal.machines import UnplaceableError
from tenantserve.adapters.fal.replica import SETUP_FAILED
from tenantserve.platform.cluster import environments, images, ray_private
from tenantserve.platform.cluster.placement import (
    NodeShape,
    actor_resources,
    autoscaler_groups,
    node_shapes,
    running_nodes,
    waiting_reason,
)
from tenantserve.platform.cluster.ray_cluster import serve_http_url, tls_verify, untrusted_certificate
from tenantserve.platform.control.accounts import audit_days
from tenantserve.platform.control.quotas import QuotaError, check_quota
from tenantserve.platform.core import settings
from tenantserve.platform.core.naming import InvalidNameError, is_valid_app_ref, route_prefix, serve_app_name
from tenantserve.platform.core.settings import state_dir
from tenantserve.platform.ops.logs import LogsError, last_lines
from tenantserve.platform.runtime.storage import FileStore
from tenantserve.platform.store.registry import Registry, database_url
from tenantserve.platform.store.secret_box import key_file

Progress = Callable[[str], None]


class DeployError(RuntimeError):
    """A deploy that did not reach a serving app; the message is what the user must know."""


@dataclass
class AppStatus:
    owner: str
    name: str
    status: str
    url: str
    revision: Optional[str] = None
    auth: str = "private"
    machine_type: str = ""
    replicas: dict[str, int] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)  # where its running replicas are
    waiting: str = ""  # why a replica it should have is not running
    message: str = ""


def app_url(http_url: str, owner: str, app: str) -> str:
    return f"{http_url.rstrip('/')}{route_prefix(owner, app)}"


def _serve_status(name: str) -> Optional[Any]:
    """Serve's status of one app (its own and its deployments'), or None if Serve has no
    such app. Asked for that app alone: `serve.status()` validates every app's details
    and took 0.8 s with 200 apps."""
    overview = ray_private.serve_client().get_serve_status(name)
    return None if _state(overview.app_status.status) == "NOT_STARTED" else overview


def is_serving(owner: str, app: str) -> bool:
    """Whether Serve runs the app (a registered one, or `platform run`'s)."""
    return _serve_status(serve_app_name(owner, app)) is not None


def _serve_app_names() -> set[str]:
    """Every app Serve runs, by name: one cheap call to the controller."""
    controller = ray_private.serve_controller()
    return {deployment.app_name for deployment in ray.get(controller.list_deployment_ids.remote())}


def _app_details(overview: Any) -> dict[str, Any]:
    """One app's part of Serve's details (its deployments' replicas, target counts and
    actor options), asked of the controller deployment by deployment."""
    controller = ray_private.serve_controller()
    deployments = {}
    for status in overview.deployment_statuses:
        try:
            details = ray.get(controller.get_deployment_details.remote(overview.name, status.name))
        except ray.exceptions.RayTaskError:  # deleted meanwhile
            continue
        deployments[status.name] = details.model_dump(mode="json", warnings=False)
    return {"deployments": deployments}


def _state(value: Any) -> str:
    """Serve's status enums as their plain names."""
    return str(getattr(value, "value", value))


def _replica_summary(details: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for deployment in details["deployments"].values():
        for replica in deployment.get("replicas", []):
            counts[_state(replica["state"])] = counts.get(_state(replica["state"]), 0) + 1
    return counts


def _failure_message(overview: Any) -> str:
    return _explain([d.message for d in overview.deployment_statuses], overview.app_status.message)


def _explain(deployment_messages: list[str], app_message: str) -> str:
    """Serve's reason, cut down to the app's own traceback when setup() raised."""
    message = "\n".join(m for m in deployment_messages if m) or app_message or "the app failed to start"
    start = message.rfind(SETUP_FAILED)
    if start < 0:
        return message
    return "\n".join(line for line in message[start:].strip().splitlines() if "ray::" not in line)


def platform_config(registry_url: str) -> dict[str, Any]:
    """What replicas need from the platform: the registry (API keys, secrets), the secrets'
    key, the file store and the URL files are served at, the node's model cache, how long
    the queue keeps results and how many dispatchers it runs, how many spare workers each
    node keeps, and how long the audit log keeps an entry."""
    store = FileStore.configured(state_dir())
    dispatchers = settings.QUEUE_DISPATCHERS.value()
    if dispatchers < 1 or (dispatchers > 1 and registry_url.startswith("sqlite")):
        raise DeployError(f"TENANTSERVE_QUEUE_DISPATCHERS={dispatchers}: use 1, or more with a PostgreSQL registry "
                          "(TENANTSERVE_DB), where dispatchers share the queue")
    return {
        "registry_url": registry_url,
        "secret_key_file": str(key_file(state_dir())),
        "files_root": store.root,
        "files_ttl_s": store.ttl_s,
        "public_url": settings.URL.get() or serve_http_url(),
        "model_cache": settings.MODEL_CACHE.get() or str(state_dir() / "cache"),
        "results_ttl_s": settings.RESULTS_TTL.value(),
        "queue_dispatchers": dispatchers,
        "spare_workers": settings.SPARE_WORKERS.value(),
        "download_hosts": settings.DOWNLOAD_HOSTS.value(),
        "audit_days": audit_days(),
    }


def target(
    bundle: AppBundle,
    config: dict[str, Any],
    nodes: Optional[list[Mapping[str, float]]] = None,
    progress: Progress = lambda line: None,
    registry: Optional[Registry] = None,
) -> RunTarget:
    options = bundle.options
    if options.image is not None:
        number = registry.user_number(bundle.owner) if registry is not None else _user_number(config, bundle.owner)
        images.prepare(options.image, bundle.image_files, bundle.owner, number, options.requirements,
                       options.python_version, progress)
    elif options.requirements:
        environments.prepare(options.requirements, progress)
    return RunTarget(
        target=to_application(bundle, nodes if nodes is not None else node_shapes(), config),
        name=serve_app_name(bundle.owner, bundle.app_name),
        route_prefix=route_prefix(bundle.owner, bundle.app_name),
    )


def _user_number(config: dict[str, Any], user: str) -> Optional[int]:
    registry = Registry(config["registry_url"], migrate_schema=False)
    try:
        return registry.user_number(user)
    finally:
        registry.engine.dispose()


def apply(*targets: RunTarget) -> None:
    """Apply Serve apps without waiting for them (`wait_running` waits for one)."""
    serve.run_many(list(targets), wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)


def wait_running(name: str, timeout: float, progress: Progress) -> None:
    """Wait for Serve to run the target last applied (an apply turns the app DEPLOYING at once)."""
    deadline = time.monotonic() + timeout
    # A replica takes a moment to be placed: only one still unplaced after 3 s waits for something.
    last, waiting, next_look = "", "", time.monotonic() + 3
    while time.monotonic() < deadline:
        overview = _serve_status(name)
        if overview is not None:
            state = _state(overview.app_status.status)
            if state == "RUNNING":
                return
            if state in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise DeployError(_failure_message(overview))
            details = _app_details(overview)
            summary = _replica_summary(details)
            replicas = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.items()))
            line = f"replicas: {replicas}" if replicas else "scheduling replicas"
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + 2
                waiting = _waiting(details, lambda: running_nodes() + autoscaler_groups())
            line += f" ({waiting})" if waiting else ""
            if line != last:
                progress(line)
                last = line
        time.sleep(0.2)
    overview = _serve_status(name)
    detail = waiting or (_failure_message(overview) if overview is not None else "")
    raise DeployError(f"replicas were not ready within startup_timeout ({timeout:g}s): {detail}".strip(": ")
                      + _replica_tail(name))


def _replica_tail(name: str, count: int = 40) -> str:
    """The last lines the app's replicas logged: where a start that never finished waits (with
    its runner's stacks, which a replica still starting has the runner print)."""
    try:
        lines = last_lines(name, count)
    except LogsError:
        return ""
    shown = [text if len(text) <= 300 else text[:300] + " ..." for text in (line.render() for line in lines)]
    return "\nthe replicas' last log lines:\n" + "\n".join(shown) if shown else ""


def poll(url: str, answered: Callable[[httpx.Response], bool], timeout: float) -> Optional[str]:
    """GET `url` until `answered` says yes (None), or for `timeout` seconds (the last
    reason it did not); a certificate that does not verify ends it at once."""
    deadline, verify, last_error = time.monotonic() + timeout, tls_verify(url), ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=5, verify=verify)
            if answered(response):
                return None
            last_error = f"it answered {response.status_code}"
        except httpx.ConnectError as error:
            if "CERTIFICATE_VERIFY_FAILED" in str(error) or "certificate verify failed" in str(error):
                raise DeployError(untrusted_certificate(url, error)) from None
            last_error = str(error)
        except (httpx.HTTPError, ValueError) as error:
            last_error = str(error) or type(error).__name__
        time.sleep(0.1)
    return last_error


def _wait_answering(url: str, code_version: str, timeout: float = 30) -> None:
    """Serve's proxies learn new routes and replicas a moment after the app runs; wait
    until the new code answers on the HTTP port."""
    failed = poll(f"{url}/health", lambda r: r.status_code == 200 and r.json().get("version") == code_version, timeout)
    if failed is not None:
        raise DeployError(f"the app is running but {url}/health did not answer within {timeout:g}s ({failed})")


# What the apps that are not registered (`platform run`'s) serve, for a failed redeploy of
# one to fall back to: kept by the control plane that deployed them, so a control plane that
# restarted since removes such an app when its redeploy fails.
_unregistered: dict[str, AppBundle] = {}


def deploy(
    bundle: AppBundle,
    http_url: str,
    registry: Optional[Registry],
    progress: Progress = lambda line: None,
    *,
    register: bool = True,
    config: Optional[dict[str, Any]] = None,
) -> str:
    """Deploy a bundle and wait until it answers; returns its URL or raises DeployError.
    With `register=False` (`platform run`'s ephemeral apps) the app counts against the
    owner's quota but is not recorded, so it is not restored after a restart. `config`:
    the platform's config as the control plane was given it (default: read here)."""
    try:
        name = serve_app_name(bundle.owner, bundle.app_name)
    except InvalidNameError as error:
        raise DeployError(str(error)) from None
    previous = AppBundle.registered(registry.get(bundle.owner, bundle.app_name)) if registry else None
    if previous is None and not register:
        previous = _unregistered.get(name)  # `platform run --reload` deploying its app again
    registry_url = registry.url if registry else database_url()
    try:
        if registry is not None:
            check_quota(registry, bundle, deployed=_serve_app_names(), unregistered=list(_unregistered.values()))
        config = config or platform_config(registry_url)
        apply(target(bundle, config, progress=progress, registry=registry))
    except (UnplaceableError, QuotaError, environments.BuildError) as error:
        raise DeployError(str(error)) from None
    try:
        wait_running(name, bundle.options.startup_timeout, progress)
    except (DeployError, KeyboardInterrupt):
        _restore(name, previous, config, progress)
        raise
    url = app_url(http_url, bundle.owner, bundle.app_name)
    _wait_answering(url, bundle.code_version)
    if registry is not None and register:
        registry.put(bundle)
    elif not register:
        _unregistered[name] = bundle
    return url


def _restore(name: str, previous: Optional[AppBundle], config: dict[str, Any], progress: Progress) -> None:
    if previous is None:
        progress("removing the failed app")
        serve.delete(name)
        return
    progress(f"keeping revision {previous.revision} serving")
    apply(target(previous, config))
    wait_running(name, previous.options.startup_timeout, progress)


def delete(owner: str, app: str, registry: Optional[Registry]) -> bool:
    """Remove an app from Serve and the registry; False if neither knew it."""
    name = serve_app_name(owner, app)
    _unregistered.pop(name, None)
    known = _serve_status(name) is not None
    if known:
        serve.delete(name)
    forgotten = registry.delete(owner, app) if registry else False
    return known or forgotten


def _serve_details() -> dict[str, Any]:
    """Serve's controller view of every app: deployments, their actor options and replicas
    with node and state (what the dashboard's Serve page shows)."""
    return ray_private.serve_client().get_serve_details().get("applications", {})


def _app_from_details(bundle: AppBundle, details: Optional[dict[str, Any]], http_url: str,
                      nodes: Callable[[], list[NodeShape]]) -> AppStatus:
    row = AppStatus(
        owner=bundle.owner, name=bundle.app_name, status="NOT_RUNNING",
        url=app_url(http_url, bundle.owner, bundle.app_name), revision=bundle.revision,
        auth=bundle.options.app_auth, machine_type=str(bundle.options.machine_type),
    )
    if details is None:
        return row
    row.status = _state(details["status"])
    for deployment in details.get("deployments", {}).values():
        for replica in deployment.get("replicas", []):
            state = _state(replica["state"])
            row.replicas[state] = row.replicas.get(state, 0) + 1
            if state == "RUNNING":
                row.nodes.append(replica["node_id"])
    row.waiting = _waiting(details, nodes)
    if row.status != "RUNNING":
        messages = [d.get("message", "") for d in details.get("deployments", {}).values()]
        row.message = _explain(messages, details.get("message", ""))
    return row


def _waiting(details: dict[str, Any], nodes: Callable[[], list[NodeShape]]) -> str:
    """Why the app has fewer running replicas than Serve wants, if it has."""
    for deployment in details.get("deployments", {}).values():
        replicas = deployment.get("replicas", [])
        # A replica that Ray has not placed yet has no node; a placed one is just starting.
        placed = [r for r in replicas if r.get("node_id") and _state(r["state"]) in ("RUNNING", "STARTING")]
        if len(placed) < deployment.get("target_num_replicas", 0):
            need = actor_resources(deployment.get("deployment_config", {}).get("ray_actor_options") or {})
            reason = waiting_reason(need, nodes())
            if reason:
                return reason
    return ""


def list_apps(http_url: str, registry: Registry, owner: Optional[str] = None) -> list[AppStatus]:
    """The registered apps (one owner's, or everyone's) with Serve's view of each."""
    details = _serve_details()
    shapes: list[NodeShape] = []

    def nodes() -> list[NodeShape]:  # read only when some app waits for a replica
        if not shapes:
            shapes.extend(running_nodes() + autoscaler_groups())
        return shapes

    return [
        _app_from_details(bundle, details.get(serve_app_name(bundle.owner, bundle.app_name)), http_url, nodes)
        for bundle in map(AppBundle.registered, registry.list(owner)) if is_valid_app_ref(bundle.owner, bundle.app_name)
    ]
