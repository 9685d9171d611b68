"""Who may call an app: `Authorization: Key <key_id>:<key_secret>` checked in the app's own
ingress, so a refused request never reaches the endpoint and no gateway hop is added.

| app mode  | no or bad key | another user's key | the owner's key |
|-----------|---------------|--------------------|-----------------|
| `private` | 401           | 403                | served          |
| `shared`  | 401           | served             | served          |
| `public`  | served        | served             | served          |

Private apps answer 403, not 404, to a valid key of another user: the app's existence is
not a secret worth a misleading status, and 403 tells the caller which key to fix.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable, Optional

from .registry import Registry

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
AUTH_MODES = ("private", "shared", "public")
CACHE_SECONDS = 10.0


def key_from_header(value: Optional[str]) -> Optional[str]:
    """`Key id:secret` (fal's scheme) or `Bearer id:secret` -> `id:secret`."""
    if not value:
        return None
    scheme, _, key = value.strip().partition(" ")
    return key.strip() if scheme.lower() in ("key", "bearer") and key.strip() else None


class KeyCache:
    """Key -> user lookups, remembered for a few seconds: a revoked key stops working
    within CACHE_SECONDS, and a busy app does not query the database per request."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._entries: dict[str, tuple[float, Optional[str]]] = {}

    async def caller(self, authorization: Optional[str]) -> Optional[str]:
        """The user behind an `Authorization` header's key; None without a valid one."""
        key = key_from_header(authorization)
        return await self.user(key) if key else None

    async def user(self, key: str) -> Optional[str]:
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached and cached[0] > now:
            return cached[1]
        user = await asyncio.to_thread(self._registry.authenticate, key)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (now + CACHE_SECONDS, user)
        return user


class AuthMiddleware:
    def __init__(self, app: ASGIApp, owner: str, mode: str, registry: Registry) -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"unknown auth mode {mode!r}")
        self.app, self.owner, self.mode = app, owner, mode
        self._keys = KeyCache(registry) if mode != "public" else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._keys is None or scope["type"] not in ("http", "websocket") or _relative(scope) == "/health":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        user = await self._keys.caller(headers.get(b"authorization", b"").decode("latin-1"))
        if user is None:
            return await _refuse(scope, receive, send, 401, "Missing or invalid API key: send 'Authorization: Key <key_id>:<key_secret>'")
        if self.mode == "private" and user != self.owner:
            return await _refuse(scope, receive, send, 403, f"This app is private to {self.owner}")
        scope.setdefault("state", {})["tenantserve_user"] = user
        await self.app(scope, receive, send)


def _relative(scope: dict) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _refuse(scope: dict, receive: Any, send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Key"))
    prefix = "http"
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            # No way to answer the handshake with a status: open the socket and close it at
            # once with 4401 / 4403 and the reason, which clients do show (a bare refusal
            # would reach them as a 403 whatever the cause).
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4000 + status, "reason": detail})
            return
        prefix = "websocket.http"
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})
