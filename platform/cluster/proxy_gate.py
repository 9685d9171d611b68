"""The key check in front of a scale-to-zero app: Serve's proxy asks the platform (the
queue service, which holds the registry and the key cache) before a request wakes a
replica, and answers refusals and `GET /health` itself, so refused calls leave the app at
zero (docs/tenancy.md). Decisions are remembered for CACHE_S per app and key. When the
platform cannot answer in time the request goes on to the app, whose own ingress still
refuses it: this gate saves replicas, it is not where access is decided.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Optional

from tenantserve.platform.core.naming import QUEUE_APP, QUEUE_DEPLOYMENT, is_valid_app_ref
from tenantserve.platform.core.outcomes import Admission
from tenantserve.platform.runtime.auth import is_platform_health, refuse

logger = logging.getLogger("ray.serve")

CACHE_S = 5.0
ASK_TIMEOUT_S = 2.0


def tenant_app(route_prefix: str, app_name: str) -> Optional[tuple[str, str]]:
    """(owner, app) when a Serve route is a tenant's app (`/alice/my-app` for the Serve app
    `alice.my-app`), None for the platform's own routes."""
    parts = route_prefix.strip("/").split("/")
    if len(parts) != 2 or not is_valid_app_ref(*parts) or app_name != f"{parts[0]}.{parts[1]}":
        return None
    return parts[0], parts[1]


class ProxyGate:
    def __init__(self) -> None:
        self._decisions: dict[tuple[str, str, str, bool], tuple[float, Optional[Admission]]] = {}
        self._handle: Any = None

    async def answer(self, scope: dict, receive: Any, send: Any, route_prefix: str, owner: str, app: str,
                     running: Optional[int]) -> bool:
        """Answer the request here if the platform refuses it (or, at zero replicas, if it
        is the platform's health check); False to let it go on to the app."""
        within = scope["path"][len(scope.get("root_path", "")) + len(route_prefix):] or "/"
        health = is_platform_health(scope, within)
        if health and running != 0:  # a running replica answers its own health
            return False
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        decision = await self._decide(owner, app, authorization, health)
        if decision is None or decision.passes:
            return False
        if decision.status_code == 200:
            body = json.dumps(decision.body).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body if scope.get("method") != "HEAD" else b""})
        else:
            await refuse(scope, receive, send, decision.status_code, decision.body["detail"])
        return True

    async def _decide(self, owner: str, app: str, authorization: str, health: bool) -> Optional[Admission]:
        key = (owner, app, authorization, health)
        now = time.monotonic()
        cached = self._decisions.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            decision = await asyncio.wait_for(self._ask(owner, app, authorization, health), ASK_TIMEOUT_S)
        except Exception as error:  # the platform's service is starting or busy: the app decides
            logger.warning("no admission answer for %s/%s (%s); passing the request on", owner, app, error)
            return None
        if decision is not None:  # None: an app in its first deploy, registered any moment now
            if len(self._decisions) > 10_000:
                self._decisions.clear()
            self._decisions[key] = (now + CACHE_S, decision)
        return decision

    async def _ask(self, owner: str, app: str, authorization: str, health: bool) -> Optional[Admission]:
        if self._handle is None:
            from ray.serve.handle import DeploymentHandle

            self._handle = DeploymentHandle(QUEUE_DEPLOYMENT, QUEUE_APP)
        return await self._handle.admit.remote(owner, app, authorization, health)
