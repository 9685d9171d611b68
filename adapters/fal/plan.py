"""What a deploy of an App class would create, worked out without a cluster: `platform
deploy --dry-run`, for an app repository's CI. It loads and checks the app as a deploy
does (options, machine types, endpoints, name), builds the app's OpenAPI schema from its
endpoints, and lists the replica's resources, autoscaling and environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .bundle import AppBundle
from .deployment import autoscaling_config
from .loader import load_class
from .machines import replica_resources
from .routes import build_asgi_app, find_endpoints, is_streaming


@dataclass(frozen=True)
class DeployPlan:
    owner: str
    app: str
    route: str
    revision: str
    auth: str
    machine_types: list[str]
    resources: dict[str, dict[str, float]]  # per machine type, in the order a cluster tries them
    autoscaling: dict[str, Any]
    max_ongoing_requests: int
    request_timeout: Optional[float]
    requirements: list[str]
    local_files: list[str]
    endpoints: list[dict[str, Any]]
    openapi: dict[str, Any]


def plan(bundle: AppBundle) -> DeployPlan:
    """The plan for a bundle that `prepare` accepted; AppLoadError if the class cannot be
    instantiated to build its schema (setup() is not run)."""
    options = bundle.options
    app_class, _ = load_class(bundle.source)
    endpoints = find_endpoints(app_class)
    schema = build_asgi_app(app_class(), endpoints, title=f"{bundle.owner}/{bundle.app_name}",
                            timeout=options.request_timeout, version=bundle.code_version).openapi()
    return DeployPlan(
        owner=bundle.owner,
        app=bundle.app_name,
        route=f"/{bundle.owner}/{bundle.app_name}",
        revision=bundle.revision,
        auth=options.app_auth,
        machine_types=options.machine_types,
        resources={t: replica_resources(t, options.num_gpus) for t in options.machine_types},
        autoscaling=autoscaling_config(bundle),
        max_ongoing_requests=options.max_multiplexing,
        request_timeout=options.request_timeout,
        requirements=list(options.requirements),
        local_files=sorted(bundle.local_files),
        endpoints=[{
            "name": e.name,
            "path": e.spec.path,
            "kind": "websocket" if e.spec.is_websocket else
                    "server-sent events" if is_streaming(getattr(app_class, e.name)) else "POST",
        } for e in endpoints],
        openapi=schema,
    )

