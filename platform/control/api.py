"""The Serve app at `/api`: the control plane's HTTP API, reached with an API key only.

Every call is authenticated by its key (`Authorization: Key <key_id>:<secret>`) and
authorized here, on the server (`accounts.py`: a user acts on their own things, an admin
on anyone's); every change is recorded in the audit log. Its OpenAPI schema is at
`/api/openapi.json`.

No `from __future__ import annotations` here: Serve's class-based ingress rebuilds the
route signatures, and string annotations become query parameters.
"""

import asyncio
import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal, Optional

from fastapi import FastAPI, Header, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import RunTarget
from sqlalchemy.exc import OperationalError

from tenantserve.adapters.fal.bundle import AppBundle
from tenantserve.adapters.fal.upload import AppUpload
from tenantserve.platform.cluster import ray_private
from tenantserve.platform.cluster.ray_cluster import HEAD_RESOURCE
from tenantserve.platform.control.accounts import (
    AccessError,
    Accounts,
    Principal,
    principal,
    prune_audit,
    require_manage_scope,
)
from tenantserve.platform.control.app_control import AppControl
from tenantserve.platform.control.apps import DeployError
from tenantserve.platform.control.deploy_jobs import DeployJobs, ndjson_line
from tenantserve.platform.core.naming import InvalidNameError
from tenantserve.platform.runtime.auth import MISSING_KEY, key_from_header
from tenantserve.platform.runtime.busy import registry_busy
from tenantserve.platform.store.registry import Quota, Registry, RegistryError
from tenantserve.platform.store.secret_box import SecretBox, load_key

logger = logging.getLogger("ray.serve")

APP_NAME = "control"
ROUTE = "/api"
PRUNE_EVERY_S = 3600
Progress = Callable[[str], None]
LOGS_EVERY_S = 1.0

api = FastAPI(title="tenantserve control plane", version="1")
api.add_exception_handler(OperationalError, registry_busy)


@api.exception_handler(AccessError)
async def _refused(_: Request, error: AccessError) -> JSONResponse:
    return JSONResponse({"detail": error.detail}, status_code=error.status)


@api.exception_handler(RequestValidationError)
async def _malformed(request: Request, error: RequestValidationError) -> JSONResponse:
    """A malformed call without a valid key is refused as any call without one (401, not
    422): FastAPI validates the body before the route can look at the key."""
    known: Optional[Callable[[Optional[str]], Optional[Principal]]] = getattr(request.app.state, "principal", None)
    if known is not None and await asyncio.to_thread(known, request.headers.get("authorization")) is None:
        return JSONResponse({"detail": MISSING_KEY}, status_code=401)
    return await request_validation_exception_handler(request, error)


@api.exception_handler(InvalidNameError)
@api.exception_handler(RegistryError)
async def _invalid(_: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=422)


Scope = Literal["admin", "api"]


class Me(BaseModel):
    user: str
    admin: bool
    key_id: Optional[str]
    scope: Scope


class NewKey(BaseModel):
    label: str = Field("", max_length=200)
    scope: Scope = Field("admin", description="admin: manages your things too; api: only calls apps")


class Key(BaseModel):
    key_id: str
    label: str
    created_at: datetime
    revoked_at: Optional[datetime]
    scope: Scope


class Created(BaseModel):
    user: str
    key: str = Field(description="key_id:secret, shown this once")


class SecretValues(BaseModel):
    values: dict[str, str]


class Secret(BaseModel):
    name: str
    updated_at: datetime


class NewUser(BaseModel):
    name: str
    admin: bool = False


class User(BaseModel):
    name: str
    admin: bool


class Limits(BaseModel):
    apps: Optional[int] = Field(None, ge=0)
    replicas: Optional[int] = Field(None, ge=0)
    gpus: Optional[int] = Field(None, ge=0)


class Entry(BaseModel):
    at: datetime
    actor: str
    key_id: Optional[str]
    action: str
    target: str
    detail: dict[str, Any]


class DeployRequest(BaseModel):
    app: AppUpload
    app_name: Optional[str] = Field(None, max_length=200)
    auth: Optional[Literal["private", "shared", "public"]] = None
    ephemeral: bool = Field(False, description="platform run's app, not registered: a fresh name, or app_name "
                                                 "(a run's reload)")


class Revision(BaseModel):
    revision: str


class Scaling(BaseModel):
    keep_alive: Optional[float] = Field(None, ge=0)
    min_concurrency: Optional[int] = Field(None, ge=0)
    max_concurrency: Optional[int] = Field(None, ge=1)
    max_multiplexing: Optional[int] = Field(None, ge=1)


def _outcome(work: Callable[[Progress], dict[str, Any]], progress: Progress) -> dict[str, Any]:
    """A deploy's last event: `done` with what `work` returned, or `failed` with why."""
    try:
        return {"event": "done", **work(progress)}
    except DeployError as error:
        return {"event": "failed", "detail": str(error)}
    except AccessError as error:
        return {"event": "failed", "detail": error.detail}
    except Exception as error:
        logger.exception("control plane: a deploy failed")
        return {"event": "failed", "detail": f"{type(error).__name__}: {error}"}


def _deployed(bundle: AppBundle, url: str) -> dict[str, Any]:
    return {"owner": bundle.owner, "app": bundle.app_name, "revision": bundle.revision, "url": url,
            "auth": bundle.options.app_auth}


def _ndjson(lines: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(lines, media_type="application/x-ndjson")


def _limits(quota: Quota) -> Limits:
    return Limits(apps=quota.max_apps, replicas=quota.max_replicas, gpus=quota.max_gpus)


@serve.ingress(api)
class ControlPlane:
    async def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.registry = Registry(config["registry_url"], migrate_schema=False)
        self.box = SecretBox(load_key(Path(config["secret_key_file"]), create=True))
        self.audit_days = float(config["audit_days"])
        self.deploys = DeployJobs()
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())
        api.state.principal = self._principal

    async def _prune_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(prune_audit, self.registry, self.audit_days)
            except Exception:
                logger.exception("control plane: pruning the audit log failed")
            await asyncio.sleep(PRUNE_EVERY_S)

    def _principal(self, authorization: Optional[str]) -> Optional[Principal]:
        key = key_from_header(authorization)
        return principal(self.registry, key) if key else None

    def _accounts(self, authorization: Optional[str], manage: bool = True) -> Accounts:
        """The caller's actions; `manage` (every route but `/me`) takes an admin-scope key."""
        who = self._principal(authorization)
        if who is None:
            raise AccessError(401, MISSING_KEY)
        if manage:
            require_manage_scope(who)
        return Accounts(self.registry, who, self.box)

    def _apps(self, authorization: Optional[str]) -> AppControl:
        return AppControl(self.registry, self._accounts(authorization).who, self.config)

    def _deploy_stream(self, control: AppControl, bundle: AppBundle, register: bool = True) -> StreamingResponse:
        def work(progress: Progress) -> dict[str, Any]:
            return _deployed(*control.deploy(bundle, progress, register=register))

        accepted = {"event": "accepted", "owner": bundle.owner, "app": bundle.app_name, "revision": bundle.revision}
        job = self.deploys.start(bundle.owner, accepted, lambda progress: _outcome(work, progress))
        return _ndjson(job.follow())

    def check_health(self) -> None:
        if self._pruner.done():
            raise RuntimeError("the audit log's pruner stopped")

    @api.get("/v1/me", response_model=Me)
    def me(self, authorization: Optional[str] = Header(None)) -> Me:
        who = self._accounts(authorization, manage=False).who
        return Me(user=who.user, admin=who.admin, key_id=who.key_id, scope=who.scope)

    @api.get("/v1/keys", response_model=list[Key])
    def list_keys(self, user: Optional[str] = None, authorization: Optional[str] = Header(None)) -> list[Key]:
        return [Key(key_id=k.key_id, label=k.label, created_at=k.created_at, revoked_at=k.revoked_at, scope=k.scope)
                for k in self._accounts(authorization).list_keys(user)]

    @api.post("/v1/keys", response_model=Created, status_code=201)
    def create_key(self, body: NewKey, user: Optional[str] = None,
                   authorization: Optional[str] = Header(None)) -> Created:
        accounts = self._accounts(authorization)
        key = accounts.create_key(user, body.label, body.scope)
        return Created(user=user or accounts.who.user, key=key)

    @api.delete("/v1/keys/{key_id}", status_code=204)
    def revoke_key(self, key_id: str, user: Optional[str] = None, authorization: Optional[str] = Header(None)) -> None:
        self._accounts(authorization).revoke_key(key_id, user)

    @api.get("/v1/secrets", response_model=list[Secret])
    def list_secrets(self, user: Optional[str] = None, authorization: Optional[str] = Header(None)) -> list[Secret]:
        found = self._accounts(authorization).list_secrets(user)
        return [Secret(name=name, updated_at=updated) for name, updated in found.items()]

    @api.put("/v1/secrets", status_code=204)
    def set_secrets(self, body: SecretValues, user: Optional[str] = None,
                    authorization: Optional[str] = Header(None)) -> None:
        self._accounts(authorization).set_secrets(body.values, user)

    @api.delete("/v1/secrets/{name}", status_code=204)
    def unset_secret(self, name: str, user: Optional[str] = None, authorization: Optional[str] = Header(None)) -> None:
        self._accounts(authorization).unset_secret(name, user)

    @api.get("/v1/users", response_model=list[User])
    def list_users(self, authorization: Optional[str] = Header(None)) -> list[User]:
        return [User(name=name, admin=admin) for name, admin in self._accounts(authorization).list_users()]

    @api.post("/v1/users", response_model=Created, status_code=201)
    def create_user(self, body: NewUser, authorization: Optional[str] = Header(None)) -> Created:
        return Created(user=body.name, key=self._accounts(authorization).create_user(body.name, body.admin))

    @api.get("/v1/users/{name}/quota", response_model=Limits)
    def quota(self, name: str, authorization: Optional[str] = Header(None)) -> Limits:
        return _limits(self._accounts(authorization).quota(name))

    @api.put("/v1/users/{name}/quota", response_model=Limits)
    def set_quota(self, name: str, body: Limits, authorization: Optional[str] = Header(None)) -> Limits:
        quota = Quota(max_apps=body.apps, max_replicas=body.replicas, max_gpus=body.gpus)
        self._accounts(authorization).set_quota(name, quota)
        return _limits(quota)

    @api.get("/v1/audit", response_model=list[Entry])
    def audit(self, since: Optional[datetime] = None, actor: Optional[str] = None,
              limit: int = Query(100, ge=1, le=10000), authorization: Optional[str] = Header(None)) -> list[Entry]:
        entries = self._accounts(authorization).audit(since, actor, limit)
        return [Entry(at=e.at, actor=e.actor, key_id=e.key_id, action=e.action, target=e.target, detail=e.detail)
                for e in entries]

    # apps

    @api.get("/v1/apps")
    async def list_apps(self, user: Optional[str] = None, all_users: bool = False,
                        authorization: Optional[str] = Header(None)) -> list[dict[str, Any]]:
        control = await asyncio.to_thread(self._apps, authorization)
        return [asdict(row) for row in await asyncio.to_thread(control.list, user, all_users)]

    @api.post("/v1/apps", responses={200: {"description": "NDJSON: progress lines, then done or failed"}})
    async def deploy(self, body: DeployRequest, user: Optional[str] = None,
                     authorization: Optional[str] = Header(None)) -> StreamingResponse:
        """Read the uploaded app in a sandbox, then deploy it, streaming its progress."""
        control = await asyncio.to_thread(self._apps, authorization)
        bundle, _ = await asyncio.to_thread(control.read, body.app, user, body.app_name)
        auth = body.auth or ("public" if body.ephemeral else None)
        bundle = bundle.with_auth(auth)
        if body.ephemeral:
            bundle = await asyncio.to_thread(control.ephemeral, bundle, body.app_name is not None)
        return self._deploy_stream(control, bundle, register=not body.ephemeral)

    @api.post("/v1/apps/plan")
    async def plan(self, body: DeployRequest, user: Optional[str] = None,
                   authorization: Optional[str] = Header(None)) -> dict[str, Any]:
        """What a deploy of the upload would create, read on the server (the CLI's `--dry-run` reads it locally)."""
        control = await asyncio.to_thread(self._apps, authorization)
        bundle, found = await asyncio.to_thread(control.read, body.app, user, body.app_name)
        if body.auth:
            found["auth"] = body.auth
        return found

    @api.delete("/v1/apps/{owner}/{app}", status_code=204)
    def delete_app(self, owner: str, app: str, authorization: Optional[str] = Header(None)) -> None:
        self._apps(authorization).delete(owner, app)

    @api.get("/v1/apps/{owner}/{app}/revisions")
    def revisions(self, owner: str, app: str, authorization: Optional[str] = Header(None)) -> list[dict[str, Any]]:
        current, revisions = self._apps(authorization).revisions(owner, app)
        return [{"revision": rev, "created": created.isoformat(), "serving": rev == current,
                 "class": bundle.source.class_name, "machine_type": bundle.options.machine_type,
                 "min_concurrency": bundle.options.min_concurrency, "max_concurrency": bundle.options.max_concurrency,
                 "keep_alive": bundle.options.keep_alive, "auth": bundle.options.app_auth}
                for rev, created, bundle in revisions]

    @api.put("/v1/apps/{owner}/{app}/revision")
    async def set_revision(self, owner: str, app: str, body: Revision,
                           authorization: Optional[str] = Header(None)) -> StreamingResponse:
        control = await asyncio.to_thread(self._apps, authorization)
        bundle = await asyncio.to_thread(control.revision, owner, app, body.revision)
        return self._deploy_stream(control, bundle)

    @api.patch("/v1/apps/{owner}/{app}/scaling")
    async def scale(self, owner: str, app: str, body: Scaling,
                    authorization: Optional[str] = Header(None)) -> StreamingResponse:
        control = await asyncio.to_thread(self._apps, authorization)
        bundle = await asyncio.to_thread(control.rescaled, owner, app, body.model_dump())
        return self._deploy_stream(control, bundle)

    @api.get("/v1/deploys/{deploy_id}", responses={200: {"description": "NDJSON: the deploy's events from `after` on"}})
    async def deploy_events(self, deploy_id: str, after: int = Query(0, ge=0),
                            authorization: Optional[str] = Header(None)) -> StreamingResponse:
        """The rest of a deploy's events, for a client whose stream ended before the deploy did."""
        control = await asyncio.to_thread(self._apps, authorization)
        job = self.deploys.get(deploy_id)
        if job is None or not (control.who.admin or control.who.user == job.owner):
            raise AccessError(404, f"no deploy {deploy_id} (the control plane keeps a deploy's events "
                                   "for 15 minutes, and not across its own restart)")
        return _ndjson(job.follow(after))

    @api.get("/v1/apps/{owner}/{app}/runners")
    def runners(self, owner: str, app: str, authorization: Optional[str] = Header(None)) -> list[dict[str, Any]]:
        return [asdict(runner) for runner in self._apps(authorization).runners(owner, app)]

    @api.delete("/v1/runners/{runner_id}")
    def kill_runner(self, runner_id: str, user: Optional[str] = None,
                    authorization: Optional[str] = Header(None)) -> dict[str, str]:
        return {"app": self._apps(authorization).kill_runner(runner_id, user)}

    @api.get("/v1/apps/{owner}/{app}/logs", responses={200: {"description": "NDJSON: one object per log line"}})
    async def logs(self, owner: str, app: str, since: Optional[datetime] = None, request_id: Optional[str] = None,
                   follow: bool = False, authorization: Optional[str] = Header(None)) -> StreamingResponse:
        control = await asyncio.to_thread(self._apps, authorization)
        first = await asyncio.to_thread(control.logs, owner, app, since, request_id)

        async def lines() -> AsyncIterator[bytes]:
            found, printed = first, 0
            while True:
                for line in found[printed:]:
                    yield ndjson_line({"line": line.render(), "time": line.time.isoformat(), "replica": line.replica,
                                 "level": line.level, "message": line.message, "request_id": line.request_id})
                printed = len(found)
                if not follow:
                    return
                await asyncio.sleep(LOGS_EVERY_S)
                try:
                    found = await asyncio.to_thread(control.logs, owner, app, since, request_id)
                except AccessError:  # the app is gone (a `platform run` that ended)
                    return

        return _ndjson(lines())

    @api.get("/v1/status")
    def status(self, authorization: Optional[str] = Header(None)) -> dict[str, Any]:
        return asdict(self._apps(authorization).status())


def control_target(config: dict[str, Any], version: str) -> RunTarget:
    # On the head node, where the platform's state directory (secret key, local file store) is.
    deployment = serve.deployment(ControlPlane, name="ControlPlane", num_replicas=1, max_ongoing_requests=200,
                                  ray_actor_options={"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.001}})
    deployment = ray_private.pinned(deployment, version)
    return RunTarget(target=deployment.bind(config), name=APP_NAME, route_prefix=ROUTE)
