"""Who may call an app or read its files: `Authorization: Key <key_id>:<key_secret>`, checked
in the app's own ingress, the queue, the file server and when an app reads a file input,
all against one access table (`refusal`). The table, and why private apps answer
403 rather than 404: docs/tenancy.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
from typing import Any, Awaitable, Callable, Iterator, Optional

from tenantserve.platform.store.registry import Registry

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
AUTH_MODES = ("private", "shared", "public")
CACHE_SECONDS = 10.0

# The user whose request a replica is serving now (None: an anonymous caller of a public
# app), for the checks made on that user's behalf deeper down, such as reading file inputs.
CALLER: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("tenantserve_caller", default=None)


@contextlib.contextmanager
def acting_for(caller: Optional[str]) -> Iterator[None]:
    """Serve a request on `caller`'s behalf: what it reads for them (file inputs) is
    checked against `caller`'s rights."""
    token = CALLER.set(caller)
    try:
        yield
    finally:
        CALLER.reset(token)


def key_from_header(value: Optional[str]) -> Optional[str]:
    """`Key id:secret` (fal's scheme) or `Bearer id:secret` -> `id:secret`."""
    if not value:
        return None
    scheme, _, key = value.strip().partition(" ")
    return key.strip() if scheme.lower() in ("key", "bearer") and key.strip() else None


MISSING_KEY = "Missing or invalid API key: send 'Authorization: Key <key_id>:<key_secret>'"


def refusal(mode: str, owner: str, caller: Optional[str], what: str = "app") -> Optional[tuple[int, str]]:
    """(status, detail) when `caller` (None: no valid key) may not use the `what` (an app,
    a file) that `owner` has in `mode`; None when it may."""
    if mode == "public":
        return None
    if caller is None:
        return 401, MISSING_KEY
    if mode == "private" and caller != owner:
        return 403, f"This {what} is private to {owner}"
    return None


def is_platform_health(scope: dict, path: Optional[str] = None) -> bool:
    """The platform's own health route: `GET /health` (or HEAD) of an app, the one route of
    a non-public app that needs no key. An app's own endpoint at `/health` is a POST or a
    websocket and needs the app's key like any other. `path`: the path within the app,
    when the scope's root path does not say where the app starts."""
    if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
        return False
    return (path if path is not None else relative_path(scope)) == "/health"


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


class _NotLoad:
    in_flight = 0


def not_load_in_flight() -> int:
    """Requests this process is refusing or answering health checks for right now: Serve
    counts them among a replica's ongoing requests, but they are no load to scale on
    (serve_patches subtracts them)."""
    return _NotLoad.in_flight


@contextlib.contextmanager
def _not_load() -> Iterator[None]:
    _NotLoad.in_flight += 1
    try:
        yield
    finally:
        _NotLoad.in_flight -= 1


class AuthMiddleware:
    def __init__(self, app: ASGIApp, owner: str, mode: str, registry: Registry) -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"unknown auth mode {mode!r}")
        self.app, self.owner, self.mode = app, owner, mode
        self._keys = KeyCache(registry)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if is_platform_health(scope):
            with _not_load():
                return await self.app(scope, receive, send)
        # A public app needs no key, but one sent still names the caller (for file inputs).
        authorization = dict(scope.get("headers") or []).get(b"authorization")
        user = await self._keys.caller(authorization.decode("latin-1")) if authorization else None
        refused = refusal(self.mode, self.owner, user)
        if refused is not None:
            with _not_load():
                return await refuse(scope, receive, send, *refused)
        scope.setdefault("state", {})["tenantserve_user"] = user
        with acting_for(user):
            await self.app(scope, receive, send)


def relative_path(scope: dict) -> str:
    """The request's path within the app (`/<user>/<app>/x` -> `/x`)."""
    path, root = scope["path"], scope.get("root_path", "")
    return (path[len(root):] if root and path.startswith(root) else path) or "/"


async def refuse(scope: dict, receive: Any, send: Any, status: int, detail: str) -> None:
    """Answer an HTTP request or websocket handshake with fal's error body."""
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
