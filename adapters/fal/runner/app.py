"""Load the deployed app file as a module and build the ASGI app fal's runners serve."""

from __future__ import annotations

import functools
import inspect
import linecache
import sys
import types
import typing
from pathlib import Path
from typing import Any


class LoadError(RuntimeError):
    """The app file or class cannot be loaded in the runner."""


def _images_are_built() -> None:
    """fal's `ContainerImage.from_dockerfile` reads its file as the app's class is made; a
    runner runs inside the image the platform built from it, where that file is not."""
    from fal.container import ContainerImage

    read = ContainerImage.__dict__["from_dockerfile"].__func__

    def from_dockerfile(cls: type, path: Any, **kwargs: Any) -> Any:
        try:
            return read(cls, path, **kwargs)
        except OSError:
            return cls.from_dockerfile_str("# built by the platform before this runner started", **kwargs)

    ContainerImage.from_dockerfile = classmethod(from_dockerfile)  # type: ignore[method-assign, assignment]


def load_class(filename: str, source: str, module_name: str, class_name: str) -> type:
    """Run the app file's text as module `module_name` (tracebacks show the file's own
    lines under `filename`, the path it was deployed from) and return its App class."""
    _images_are_built()
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), module.__dict__)
    app_class = getattr(module, class_name, None)
    if is_served_function(app_class):
        return function_app(app_class)
    if not isinstance(app_class, type):
        raise LoadError(f"{Path(filename).name} has no class {class_name!r}")
    return app_class


def is_function(value: Any) -> bool:
    """A `@fal.function` (served or not)."""
    from fal.api import IsolatedFunction

    return isinstance(value, IsolatedFunction)


def is_served_function(value: Any) -> bool:
    return is_function(value) and bool(value.options.gateway.get("serve"))


def _resolved_hints(function: Any) -> dict[str, Any]:
    """The function's annotations as objects (`Annotated` kept), each resolved in the app
    file's globals: the endpoint made from it has this module's globals, not the app's."""
    hints = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            hints[name] = typing.get_type_hints(
                types.SimpleNamespace(__annotations__={name: annotation}, __module__=function.__module__),
                globalns=function.__globals__, include_extras=True)[name]
        except Exception:
            hints[name] = annotation
    return hints


def function_app(function: Any) -> type:
    """`@fal.function(serve=True)` as the App class it amounts to in fal's SDK (its
    ServeWrapper): one `POST /` endpoint that calls the function, and the function's
    options as the class's. The fal serving packages fal adds to a served function's
    requirements are the runner's own already."""
    import fal
    from fal.api.api import SERVE_REQUIREMENTS

    raw = function.raw_func
    settings = {**function.options.host}
    settings.update({k: v for k, v in function.options.environment.items() if (k, v) != ("kind", "virtualenv")})
    wanted = [r for r in settings.pop("requirements", []) if r not in SERVE_REQUIREMENTS]
    if wanted:
        settings["requirements"] = wanted
    hints = _resolved_hints(raw)
    signature = inspect.signature(raw)
    parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    if inspect.isasyncgenfunction(raw):
        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            async for item in raw(*args, **kwargs):
                yield item
    elif inspect.iscoroutinefunction(raw):
        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await raw(*args, **kwargs)
    elif inspect.isgeneratorfunction(raw):
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            yield from raw(*args, **kwargs)
    else:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            return raw(*args, **kwargs)
    call = functools.wraps(raw)(call)
    del call.__wrapped__
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *parameters],
        return_annotation=hints.get("return", signature.return_annotation))
    call.__annotations__ = {**hints}
    body = {"__module__": raw.__module__, "__doc__": raw.__doc__, raw.__name__: fal.endpoint("/")(call)}
    return types.new_class(raw.__name__, (fal.App,), settings, lambda namespace: namespace.update(body))


IDLE_LAYERS = frozenset({"PrometheusMiddleware", "set_log_context"})
"""Layers of fal's app that do nothing in a runner and cost a fifth of a millisecond each
per request: Prometheus counters that only fal's own `serve()` publishes (on its metrics
port, which a runner does not open; the replica exports the platform's metrics), and the
log labels fal sets through its isolate agent's gRPC channel, which a runner has not."""


def _layer_name(layer: Any) -> str:
    dispatch = layer.kwargs.get("dispatch")
    return getattr(dispatch or layer.cls, "__name__", "")


def _served(app: Any) -> Any:
    """fal's FastAPI app for `app`, without its IDLE_LAYERS."""
    asgi = app._build_app()
    asgi.user_middleware = [layer for layer in asgi.user_middleware if _layer_name(layer) not in IDLE_LAYERS]
    return asgi


def build(app_class: type) -> tuple[Any, Any]:
    """The App instance (setup() runs in the ASGI app's lifespan) and the ASGI app it is
    served by."""
    from fal.ref import set_current_app

    app = app_class(_allow_init=True)
    set_current_app(app)
    return app, _served(app)


def warm_up() -> None:
    """One request through fal's app for a trivial App of the runner's own, in this
    process, with no app code loaded: what fal, Starlette and anyio import or compile on a
    first request (tens of milliseconds) is done before a spare is claimed, not on the
    first call to the app that claims it."""
    import asyncio

    import fal
    import fal.app
    import fal.ref

    class _WarmUp(fal.App):
        @fal.endpoint("/")
        def answer(self, request: dict) -> dict:
            return request

    asgi = _served(_WarmUp(_allow_init=True))
    body = b"{}"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "", "client": None, "server": None,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def once() -> None:
        async with asgi.router.lifespan_context(asgi):
            await asgi(scope, receive, send)

    print_packages, fal.app._print_python_packages = fal.app._print_python_packages, lambda: None
    try:
        asyncio.run(once())
    finally:
        fal.app._print_python_packages = print_packages
        fal.ref.current_app = None
    if not sent or sent[0].get("status") != 200:
        raise RuntimeError(f"the runner's warm-up request was not answered: {sent[:1]}")
