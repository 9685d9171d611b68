"""The platform's own Serve apps (`/api`, `/queue`, `/files` and the spare-worker keeper)
and bringing a platform up: they and every registered app applied again, as after a
cluster restart. Also what sets the platform's apps apart from users' when names are
cleaned up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import RunTarget

from tenantserve.adapters.fal.bundle import AppBundle
from tenantserve.adapters.fal.machines import UnplaceableError
from tenantserve.platform.cluster import environments
from tenantserve.platform.cluster.coldstart import APP_NAME as SPARES_APP
from tenantserve.platform.cluster.coldstart import spares_target
from tenantserve.platform.cluster.placement import node_shapes
from tenantserve.platform.control.api import APP_NAME as CONTROL_APP
from tenantserve.platform.control.api import control_target
from tenantserve.platform.control.apps import DeployError, Progress, apply, platform_config, poll, target, wait_running
from tenantserve.platform.core.naming import InvalidNameError, is_valid_app_ref, serve_app_name
from tenantserve.platform.services.file_server import APP_NAME as FILES_APP
from tenantserve.platform.services.file_server import file_server_target
from tenantserve.platform.services.queue_server import APP_NAME as QUEUE_APP
from tenantserve.platform.services.queue_server import queue_server_target
from tenantserve.platform.store.registry import InvalidNames, Registry

PACKAGE_ROOT = Path(__file__).parents[2]  # the installed `tenantserve` package


def services(config: dict[str, Any]) -> list[RunTarget]:
    """The platform's own Serve apps, `/files`, `/queue`, `/api` and the spare-worker keeper, pinned
    to a version of their config and code: applying them again changes nothing until one
    of those changes."""
    code = b"".join(path.read_bytes() for folder in ("platform", "adapters")
                    for path in sorted((PACKAGE_ROOT / folder).rglob("*.py")))
    version = hashlib.sha256(json.dumps(config, sort_keys=True).encode() + code).hexdigest()[:16]
    return [file_server_target(config, version), queue_server_target(config, version), control_target(config, version),
            spares_target(config, version)]


def restore_all(registry: Registry, progress: Progress = lambda line: None) -> list[str]:
    """Deploy the platform's services and every registered app at its current revision, as
    after a cluster restart. Returns one line per app that did not come back."""
    failures, targets, bundles = [], [], []
    nodes, config = node_shapes(), platform_config(registry.url)
    for bundle in map(AppBundle.registered, registry.list()):
        try:
            targets.append(target(bundle, config, nodes, registry=registry))
            bundles.append(bundle)
        except (UnplaceableError, environments.BuildError, InvalidNameError) as error:
            failures.append(f"{bundle.owner}/{bundle.app_name}: {error}")
    if targets:
        progress(f"deploying {len(targets)} registered app(s) again")
    apply(*services(config), *targets)  # `/api` among them
    for bundle in bundles:
        try:
            wait_running(serve_app_name(bundle.owner, bundle.app_name), bundle.options.startup_timeout, lambda _: None)
        except DeployError as error:
            failures.append(f"{bundle.owner}/{bundle.app_name}: {error}")
    try:
        wait_control_plane(config["public_url"])
    except DeployError as error:
        failures.append(f"the platform's services: {error}")
    return failures


def wait_control_plane(url: str, timeout: float = 60) -> None:
    """Until the control-plane API answers on the HTTP port: a platform that is up takes
    the CLI's account commands at once."""
    api = f"{url.rstrip('/')}/api"
    failed = poll(f"{api}/openapi.json", lambda r: r.status_code == 200, timeout)
    if failed is not None:
        raise DeployError(f"the control-plane API at {api} did not answer within {timeout:g}s ({failed})")


PLATFORM_APPS = frozenset({CONTROL_APP, FILES_APP, QUEUE_APP, SPARES_APP})


@dataclass(frozen=True)
class NameCleanup:
    """What `clean_invalid_names` found (and removed unless it was a dry run)."""

    registry: InvalidNames
    serve_apps: list[str]  # Serve apps no valid `<user>.<app>` names: deployed under a bad name, never registered

    def __bool__(self) -> bool:
        return bool(self.registry or self.serve_apps)


def clean_invalid_names(registry: Registry, dry_run: bool = False) -> NameCleanup:
    """Find, and unless `dry_run` remove, what was stored or deployed under names the
    naming rules refuse: registry rows (users with their keys, apps, secrets) and the
    Serve apps running under such names."""
    found = registry.invalid_names()
    serve_names = set(serve.status().applications)
    stray = sorted(name for name in serve_names if name not in PLATFORM_APPS and not _valid_serve_name(name))
    stray += sorted(f"{owner}.{app}" for owner, app in found.apps
                    if f"{owner}.{app}" in serve_names and f"{owner}.{app}" not in stray)
    if not dry_run:
        for name in stray:
            serve.delete(name)
        registry.purge(found)
    return NameCleanup(found, stray)


def _valid_serve_name(name: str) -> bool:
    owner, sep, app = name.partition(".")
    return bool(sep) and is_valid_app_ref(owner, app)
