"""The app actions of the control plane (deploy, dry-run, list, revisions, scale, delete,
runners, logs, status), each authorized for its caller and recorded as `accounts.py`'s are.

An uploaded app is read in a sandboxed runner process (`adapters/fal/upload.py`), never
here; its names are checked before anything is stored or routed, and the owner's quota is
counted in `apps.deploy` for every way an app comes to exist.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Optional

from tenantserve.adapters.fal.bundle import SCALING_OPTIONS, AppBundle
from tenantserve.adapters.fal.loader import AppLoadError
from tenantserve.adapters.fal.options import AppOptions, OptionsError
from tenantserve.adapters.fal.sandbox import SandboxUnavailable, runner_uid
from tenantserve.adapters.fal.upload import AppUpload, read_sandboxed
from tenantserve.platform.cluster.ray_cluster import ClusterInfo, recorded, state_api_address
from tenantserve.platform.control import apps
from tenantserve.platform.control.accounts import AccessError, Acting, Principal
from tenantserve.platform.control.status import PlatformStatus, platform_status
from tenantserve.platform.core.naming import check_name
from tenantserve.platform.ops.logs import LogLine, read_logs
from tenantserve.platform.ops.runners import Runner, RunnerError, kill_runner, list_runners
from tenantserve.platform.store.registry import Registry

Progress = Callable[[str], None]


class AppControl(Acting):
    """The app actions of one caller, `who`, on the platform configured by `config`
    (the config the platform's services were applied with)."""

    def __init__(self, registry: Registry, who: Principal, config: dict[str, Any]) -> None:
        super().__init__(registry, who)
        self.config = config
        self.http_url: str = config["public_url"]

    def _app(self, owner: str, app: str) -> tuple[str, str]:
        owner = self._for(owner)
        try:
            return owner, check_name("app", app)
        except ValueError as error:
            raise AccessError(404, str(error)) from None

    def _registered(self, owner: str, app: str) -> AppBundle:
        owner, app = self._app(owner, app)
        bundle = AppBundle.registered(self.registry.get(owner, app))
        if bundle is None:
            raise AccessError(404, f"no app {owner}/{app}")
        return bundle

    # reading and deploying

    def read(self, upload: AppUpload, user: Optional[str], app_name: Optional[str]) -> tuple[AppBundle, dict[str, Any]]:
        """The bundle and plan of an upload, read in a sandbox; 422 with why it cannot deploy."""
        owner = self._for(user)
        try:
            return read_sandboxed(upload, owner, app_name, runner_uid(self.registry.user_number(owner)))
        except (AppLoadError, OptionsError) as error:
            raise AccessError(422, str(error)) from None
        except SandboxUnavailable as error:
            raise AccessError(503, str(error)) from None

    def ephemeral(self, bundle: AppBundle, named: bool = False) -> AppBundle:
        """`platform run`'s app (deploy it with `register=False`): a fresh name each run, or,
        `named` (a run's reload), the name the run was given, never a registered app's."""
        if not named:
            return replace(bundle, app_name=f"{bundle.app_name[:56]}-{secrets.token_hex(3)}")
        if self.registry.get(bundle.owner, bundle.app_name) is not None:
            raise AccessError(409, f"{bundle.owner}/{bundle.app_name} is a deployed app: platform run "
                                   "redeploys only its own app (use platform deploy)")
        return bundle

    def deploy(self, bundle: AppBundle, progress: Progress, *, register: bool = True) -> tuple[AppBundle, str]:
        """Deploy a bundle that `read` made (or a revision, or a rescale); returns it with its
        URL. An app not registered (`platform run`'s) counts against the quota but is not
        restored after a restart."""
        target, revision = f"{bundle.owner}/{bundle.app_name}", bundle.revision
        try:
            url = apps.deploy(bundle, self.http_url, self.registry, progress, register=register, config=self.config)
        except apps.DeployError as error:
            self._record("app.deploy", target, revision=revision, registered=register, failed=str(error)[:500])
            raise
        self._record("app.deploy", target, revision=revision, registered=register)
        return bundle, url

    def revision(self, owner: str, app: str, revision: str) -> AppBundle:
        """The registered revision of an app whose id starts with `revision`."""
        bundle = self._registered(owner, app)
        match = [AppBundle.from_json(r.bundle) for r in self.registry.revisions(bundle.owner, bundle.app_name)
                 if r.revision.startswith(revision)]
        if len(match) != 1:
            raise AccessError(404, f"{bundle.owner}/{bundle.app_name} has {'no' if not match else 'several'} "
                                   f"revision(s) {revision!r}")
        return match[0]

    def rescaled(self, owner: str, app: str, changes: dict[str, Any]) -> AppBundle:
        """The app's serving revision with new autoscaling options (its replicas keep running)."""
        bundle = self._registered(owner, app)
        changes = {k: v for k, v in changes.items() if k in SCALING_OPTIONS and v is not None}
        if not changes:
            raise AccessError(422, "nothing to change: give --keep-alive, --min-concurrency, --max-concurrency "
                                   "or --max-multiplexing")
        try:
            options = AppOptions(**{**bundle.options.model_dump(), **changes})
        except ValueError as error:
            raise AccessError(422, str(error)) from None
        return replace(bundle, options=options)

    # the rest

    def list(self, user: Optional[str], all_users: bool = False) -> list[apps.AppStatus]:
        if all_users and not self.who.admin:
            raise AccessError(403, "--all-users needs an admin key")
        return apps.list_apps(self.http_url, self.registry, owner=None if all_users else self._for(user))

    def delete(self, owner: str, app: str) -> None:
        owner, app = self._app(owner, app)
        if not apps.delete(owner, app, self.registry):
            raise AccessError(404, f"no app {owner}/{app}")
        self._record("app.delete", f"{owner}/{app}")

    def revisions(self, owner: str, app: str) -> tuple[Optional[str], list[tuple[str, datetime, AppBundle]]]:
        """The serving revision and every revision, oldest first."""
        bundle = self._registered(owner, app)
        return bundle.revision, [(r.revision, r.created_at, AppBundle.from_json(r.bundle))
                                 for r in self.registry.revisions(bundle.owner, bundle.app_name)]

    def runners(self, owner: str, app: str) -> list[Runner]:
        bundle = self._registered(owner, app)
        return list_runners(bundle.owner, bundle.app_name)

    def kill_runner(self, runner_id: str, user: Optional[str]) -> str:
        owner = self._for(user)
        try:
            app = kill_runner(owner, runner_id)
        except RunnerError as error:
            raise AccessError(404, str(error)) from None
        self._record("runner.kill", app, runner=runner_id)
        return app

    def logs(self, owner: str, app: str, since: Optional[datetime], request_id: Optional[str]) -> list[LogLine]:
        """A registered app's logs, or a running `platform run` app's."""
        owner, app = self._app(owner, app)
        if self.registry.get(owner, app) is None and not apps.is_serving(owner, app):
            raise AccessError(404, f"no app {owner}/{app}")
        if since is not None and since.tzinfo is not None:
            since = since.astimezone().replace(tzinfo=None)  # replicas stamp lines in the node's local time
        return read_logs(owner, app, since=since, request_id=request_id)

    def status(self) -> PlatformStatus:
        """The cluster and the caller's apps (every user's for an admin)."""
        cluster = recorded() or ClusterInfo(address=state_api_address(), http_url=self.http_url)
        return platform_status(cluster, self.registry, owner=None if self.who.admin else self.who.user)
