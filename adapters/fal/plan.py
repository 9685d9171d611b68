"""What a deploy of an App class would create, worked out without a cluster: `platform
deploy --dry-run`, for an app repository's CI. It loads and checks the app as a deploy
does (options, machine types, endpoints, name), builds the app's OpenAPI schema from its
endpoints, and lists the replica's resources, autoscaling and environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .bundle import AppBundle, check_serves
from .deployment import autoscaling_config
from .loader import read_source
from .machines import replica_resources
from .routes import find_endpoints, streams


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
    project_files: list[str]
    endpoints: list[dict[str, Any]]
    openapi: dict[str, Any]
    image: Optional[str] = None  # a container app's base image (its Dockerfile's first FROM)
    image_files: list[str] = field(default_factory=list)


def plan(bundle: AppBundle, root: Optional[Path] = None, dockerfiles: Optional[dict[str, str]] = None) -> DeployPlan:
    """The plan for a bundle that `prepare` accepted (setup() is not run); `root` and
    `dockerfiles` as for `prepare`."""
    options = bundle.options
    _, app_class = read_source(f"{bundle.source.filename}::{bundle.source.class_name}", root, dockerfiles)
    endpoints = find_endpoints(app_class)
    schema = check_serves(app_class)
    schema["info"]["title"] = f"{bundle.owner}/{bundle.app_name}"
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
        project_files=sorted(bundle.project_files),
        endpoints=[{
            "name": e.name,
            "path": e.path,
            "kind": "websocket" if e.is_websocket else "stream" if streams(app_class, e.name) else "POST",
        } for e in endpoints],
        openapi=schema,
        image=base_image(options.image.dockerfile) if options.image else None,
        image_files=sorted(bundle.image_files),
    )


def base_image(dockerfile: str) -> str:
    """The image a Dockerfile starts from (its first FROM), as written."""
    for line in dockerfile.splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            return next((w for w in words[1:] if not w.startswith("--")), "?")
    return "?"

