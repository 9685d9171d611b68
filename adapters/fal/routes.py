"""An App class's `@fal.endpoint` routes, as fal's SDK finds them, and the one rewrite
the replica makes to a request's path before it reaches the runner."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    is_websocket: bool = False
    health_check: bool = False


def find_endpoints(app_class: type) -> list[Endpoint]:
    """The class's endpoints, read with fal's own `collect_routes`."""
    routes = app_class(_allow_init=True).collect_routes()
    return [
        Endpoint(method.__name__, signature.path, bool(signature.is_websocket), signature.health_check is not None)
        for signature, method in routes.items()
    ]


def streams(app_class: type, name: str) -> bool:
    """An endpoint whose answer is a stream (fal apps return a StreamingResponse)."""
    method = getattr(app_class, name)
    hints = getattr(method, "__annotations__", {})
    returned = hints.get("return")
    return inspect.isasyncgenfunction(method) or inspect.isgeneratorfunction(method) or (
        isinstance(returned, type) and returned.__name__ in ("StreamingResponse", "EventSourceResponse"))


def bare_root_as_slash(app: Any) -> Callable[..., Any]:
    """`POST /alice/my-app` (what fal's clients send) served as `POST /alice/my-app/`:
    Starlette would answer it with a redirect, an extra round trip for every call, and
    one to plain http behind a TLS-terminating HAProxy."""

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        root = scope.get("root_path", "")
        if scope["type"] in ("http", "websocket") and root and scope["path"] == root:
            scope = {**scope, "path": root + "/"}
            if "raw_path" in scope and scope["raw_path"] is not None:
                scope["raw_path"] = scope["raw_path"] + b"/"
        await app(scope, receive, send)

    return asgi
