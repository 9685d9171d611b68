"""An App instance's `@fal.endpoint` methods -> a FastAPI app, with fal's error answers.

Each replica builds this app after `setup()`; Ray Serve's proxy sends requests for
`/<user>/<app>/...` straight to it, so no extra actor sits on the request path.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import typing
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenantserve.platform.bodies import loads as strict_json_loads

from .sdk import EndpointSpec
from .sdk.exceptions import AppException, FieldException

# Serve's logger writes to the replica's log file, tagged with the request id.
logger = logging.getLogger("ray.serve")

_HTTP_REQUEST_PARAM = "tenantserve_http_request"


@dataclass(frozen=True)
class Endpoint:
    name: str
    spec: EndpointSpec
    signature: inspect.Signature

    @property
    def body_model(self) -> Optional[type[BaseModel]]:
        params = list(self.signature.parameters.values())
        if len(params) == 1 and _is_model(params[0].annotation):
            return params[0].annotation
        return None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def find_endpoints(app_class: type) -> list[Endpoint]:
    """The class's endpoints, with annotations resolved against the app's own module."""
    endpoints = []
    for name in dir(app_class):
        method = getattr(app_class, name, None)
        spec = getattr(method, "__fal_endpoint__", None)
        if not isinstance(spec, EndpointSpec):
            continue
        hints = typing.get_type_hints(method)
        signature = inspect.signature(method)
        params = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in list(signature.parameters.values())[1:]
        ]
        endpoints.append(
            Endpoint(name, spec, signature.replace(parameters=params, return_annotation=hints.get("return", inspect.Signature.empty)))
        )
    return endpoints


async def invoke(method: Callable[..., Any], kwargs: dict[str, Any], timeout: Optional[float]) -> Any:
    """Run an endpoint method, sync ones in a worker thread, within the app's request timeout."""
    if inspect.iscoroutinefunction(method):
        call = method(**kwargs)
    else:
        call = asyncio.to_thread(method, **kwargs)
    if timeout is None:
        return await call
    return await asyncio.wait_for(call, timeout)


def _is_cuda_oom(error: BaseException) -> bool:
    return type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(error)


def error_response(error: BaseException, request_id: str, timeout: Optional[float]) -> JSONResponse:
    """fal's answer for an exception raised by an endpoint."""
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)) and timeout is not None:
        return JSONResponse({"detail": f"Request timed out after {timeout:g} seconds"}, status_code=504)
    if isinstance(error, FieldException):
        detail = [{"loc": ["body", error.field], "msg": error.message, "type": error.type}]
        return JSONResponse({"detail": detail}, status_code=error.status_code)
    if isinstance(error, AppException):
        return JSONResponse({"detail": error.message}, status_code=error.status_code)
    if _is_cuda_oom(error):
        logger.error("request %s: GPU out of memory", request_id, exc_info=error)
        return JSONResponse(
            {"detail": "The GPU ran out of memory while serving this request; retry later or send a smaller input.",
             "request_id": request_id},
            status_code=503,
        )
    logger.error("request %s failed", request_id, exc_info=error)
    return JSONResponse({"detail": "Internal Server Error", "request_id": request_id}, status_code=500)


async def answer(method: Callable[..., Any], endpoint: Endpoint, payload: Any, request_id: str,
                 timeout: Optional[float]) -> tuple[int, Any]:
    """An endpoint's answer to a JSON payload as (status code, JSON body), the same as its
    HTTP route gives; for callers that are not HTTP requests (the queue)."""
    try:
        kwargs = handle_kwargs(endpoint, payload)
    except ValidationError as error:
        return 422, {"detail": jsonable_encoder(error.errors(include_url=False))}
    except TypeError as error:
        return 422, {"detail": str(error)}
    try:
        return 200, jsonable_encoder(await invoke(method, kwargs, timeout))
    except Exception as error:
        response = error_response(error, request_id, timeout)
        return response.status_code, json.loads(response.body)


def is_streaming(method: Callable[..., Any]) -> bool:
    """An endpoint that yields answers as server-sent events, one per item."""
    return inspect.isgeneratorfunction(method) or inspect.isasyncgenfunction(method)


async def _server_sent_events(items: Any, request_id: str) -> AsyncIterator[str]:
    iterator = items if hasattr(items, "__aiter__") else iterate_in_threadpool(items)
    try:
        async for item in iterator:
            yield f"data: {json.dumps(jsonable_encoder(item))}\n\n"
    except Exception as error:  # the status line is sent: the error becomes the last event
        logger.error("request %s failed while streaming", request_id, exc_info=error)
        detail = json.loads(error_response(error, request_id, None).body)
        yield f"event: error\ndata: {json.dumps(detail)}\n\n"


def _route_handler(method: Callable[..., Any], endpoint: Endpoint, timeout: Optional[float]) -> Callable[..., Any]:
    async def handler(**kwargs: Any) -> Any:
        http_request: Request = kwargs.pop(_HTTP_REQUEST_PARAM)
        request_id = http_request.headers.get("x-request-id") or uuid.uuid4().hex
        if is_streaming(method):
            return StreamingResponse(_server_sent_events(method(**kwargs), request_id), media_type="text/event-stream")
        try:
            return await invoke(method, kwargs, timeout)
        except Exception as error:
            return error_response(error, request_id, timeout)

    request_param = inspect.Parameter(_HTTP_REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
    handler.__signature__ = endpoint.signature.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in endpoint.signature.parameters.values()
        ] + [request_param],
        return_annotation=inspect.Signature.empty,
    )
    handler.__name__ = endpoint.name
    handler.__doc__ = method.__doc__
    return handler


class _StrictJSONRequest(Request):
    """A request whose JSON body is parsed strictly (`platform/bodies.py`): NaN, Infinity,
    1e400 and too-deep nesting become FastAPI's 422 `json_invalid` instead of values no
    answer can carry back, or a 500."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = strict_json_loads(body)
            except ValueError as error:
                raise json.JSONDecodeError(str(error), body.decode("utf-8", "replace"), 0) from None
        return self._json


class _StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[..., Any]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive, request._send))

        return strict


def _relative_path(request: Request) -> str:
    path, root = request.url.path, request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _not_found(request: Request, error: StarletteHTTPException) -> Response:
    if error.status_code == 404:
        return JSONResponse({"detail": f"Path {_relative_path(request)} not found"}, status_code=404)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


def build_asgi_app(
    instance: Any, endpoints: list[Endpoint], title: str, timeout: Optional[float], version: str
) -> FastAPI:
    app = FastAPI(title=title)
    app.router.route_class = _StrictJSONRoute
    for endpoint in endpoints:
        method = getattr(instance, endpoint.name)
        if endpoint.spec.is_websocket:
            app.add_api_websocket_route(endpoint.spec.path, method, name=endpoint.name)
            continue
        returns = endpoint.signature.return_annotation
        app.add_api_route(
            endpoint.spec.path,
            _route_handler(method, endpoint, timeout),
            methods=["POST"],
            name=endpoint.name,
            response_model=returns if returns is not inspect.Signature.empty and not is_streaming(method) else None,
        )

    async def health() -> dict[str, str]:
        return {"status": "ok", "version": version}

    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(StarletteHTTPException, _not_found)
    return app


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


def handle_kwargs(endpoint: Endpoint, payload: Any) -> dict[str, Any]:
    """Arguments for an endpoint called through a Python handle with a model, a dict or nothing."""
    params = list(endpoint.signature.parameters)
    if isinstance(payload, BaseModel):
        payload = payload.model_dump()
    model = endpoint.body_model
    if model is not None:
        return {params[0]: model.model_validate(payload if payload is not None else {})}
    if payload is None:
        return {}
    if isinstance(payload, dict):
        return payload
    if len(params) == 1:
        return {params[0]: payload}
    raise TypeError(f"endpoint {endpoint.name} takes {params}, got {type(payload).__name__}")
