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
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import RunTarget
from sqlalchemy.exc import OperationalError

from .accounts import AccessError, Accounts, Principal, principal, prune_audit
from .auth import MISSING_KEY, key_from_header
from .busy import registry_busy
from .naming import InvalidNameError
from .registry import Quota, Registry, RegistryError
from .secrets import SecretBox, load_key

logger = logging.getLogger("ray.serve")

APP_NAME = "control"
ROUTE = "/api"
PRUNE_EVERY_S = 3600

api = FastAPI(title="tenantserve control plane", version="1")
api.add_exception_handler(OperationalError, registry_busy)


@api.exception_handler(AccessError)
async def _refused(_: Request, error: AccessError) -> JSONResponse:
    return JSONResponse({"detail": error.detail}, status_code=error.status)


@api.exception_handler(InvalidNameError)
@api.exception_handler(RegistryError)
async def _invalid(_: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=422)


class Me(BaseModel):
    user: str
    admin: bool
    key_id: Optional[str]


class NewKey(BaseModel):
    label: str = Field("", max_length=200)


class Key(BaseModel):
    key_id: str
    label: str
    created_at: datetime
    revoked_at: Optional[datetime]


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


def _limits(quota: Quota) -> Limits:
    return Limits(apps=quota.max_apps, replicas=quota.max_replicas, gpus=quota.max_gpus)


@serve.ingress(api)
class ControlPlane:
    async def __init__(self, config: dict[str, Any]) -> None:
        self.registry = Registry(config["registry_url"], migrate_schema=False)
        self.box = SecretBox(load_key(Path(config["secret_key_file"]), create=True))
        self.audit_days = float(config["audit_days"])
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())

    async def _prune_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(prune_audit, self.registry, self.audit_days)
            except Exception:
                logger.exception("control plane: pruning the audit log failed")
            await asyncio.sleep(PRUNE_EVERY_S)

    def _accounts(self, authorization: Optional[str]) -> Accounts:
        key = key_from_header(authorization)
        who: Optional[Principal] = principal(self.registry, key) if key else None
        if who is None:
            raise AccessError(401, MISSING_KEY)
        return Accounts(self.registry, who, self.box)

    def check_health(self) -> None:
        if self._pruner.done():
            raise RuntimeError("the audit log's pruner stopped")

    @api.get("/v1/me", response_model=Me)
    def me(self, authorization: Optional[str] = Header(None)) -> Me:
        who = self._accounts(authorization).who
        return Me(user=who.user, admin=who.admin, key_id=who.key_id)

    @api.get("/v1/keys", response_model=list[Key])
    def list_keys(self, user: Optional[str] = None, authorization: Optional[str] = Header(None)) -> list[Key]:
        return [Key(key_id=k.key_id, label=k.label, created_at=k.created_at, revoked_at=k.revoked_at)
                for k in self._accounts(authorization).list_keys(user)]

    @api.post("/v1/keys", response_model=Created, status_code=201)
    def create_key(self, body: NewKey, user: Optional[str] = None,
                   authorization: Optional[str] = Header(None)) -> Created:
        accounts = self._accounts(authorization)
        key = accounts.create_key(user, body.label)
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


def control_target(config: dict[str, Any], version: str) -> RunTarget:
    deployment = serve.deployment(ControlPlane, name="ControlPlane", num_replicas=1,
                                  ray_actor_options={"num_cpus": 0})
    deployment = deployment.options(version=version, _internal=True)
    return RunTarget(target=deployment.bind(config), name=APP_NAME, route_prefix=ROUTE)
