"""The Ray Serve replica that hosts one fal App: `setup()` in `__init__`, endpoints over HTTP.

HTTP requests reach the FastAPI app that `__serve_build_asgi_app__` returns; Python
handles call `call_endpoint`. `teardown()` runs when Serve stops the replica.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
import traceback
from typing import Any, Optional

import ray.cloudpickle
from ray import serve

from tenantserve.platform.auth import AuthMiddleware, acting_for
from tenantserve.platform.bodies import MAX_CALL_BYTES, BodyLimit
from tenantserve.platform.files import AppStorage, FileStore
from tenantserve.platform.metrics import AppMetrics
from tenantserve.platform.registry import Registry
from tenantserve.platform.secrets import replica_environment

from .bundle import AppBundle
from .loader import load_class
from .capture import install as capture_prints, request_logs
from .routes import answer, bare_root_as_slash, build_asgi_app, find_endpoints, handle_kwargs, invoke, is_streaming
from .sdk import toolkit

logger = logging.getLogger("ray.serve")

SETUP_FAILED = "setup() failed in"


class SetupError(RuntimeError):
    """setup() raised; the message holds the traceback from the app's own file down."""


def _user_traceback(error: BaseException, filename: str) -> str:
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb or error.__traceback__))


@serve.ingress()
class FalAppReplica:
    async def __init__(self, bundle_json: str, platform_config: dict[str, Any]) -> None:
        # One read-only registry connection for the replica: secrets now, API keys per request.
        self._registry = Registry(platform_config["registry_url"], migrate_schema=False)
        self._bundle = bundle = AppBundle.from_json(bundle_json)
        # The node's model cache, shared by every replica on it (fal's /data): weights land
        # there once. A node's own HF_HOME, or the owner's secrets below, take precedence.
        os.environ["TENANTSERVE_MODEL_CACHE"] = platform_config["model_cache"]
        os.environ.setdefault("HF_HOME", os.path.join(platform_config["model_cache"], "huggingface"))
        # The owner's secrets, as environment variables, before the app's code runs.
        os.environ.update(
            replica_environment(bundle.owner, self._registry, platform_config.get("secret_key_file"))
        )
        # fal.toolkit outputs go to the platform's file store, readable with this app's key rules.
        store = FileStore(platform_config["files_root"], platform_config["files_ttl_s"])
        toolkit.use_storage(AppStorage(store, platform_config["public_url"], bundle.owner, bundle.options.app_auth))
        modules_root = bundle.unpack_local_modules()
        if modules_root is not None:
            sys.path.insert(0, str(modules_root))
        app_class, module = load_class(bundle.source)
        # Output models defined in the app file travel back to handle callers by value.
        ray.cloudpickle.register_pickle_by_value(module)
        self._endpoints = {endpoint.name: endpoint for endpoint in find_endpoints(app_class)}
        capture_prints()
        self._app = app_class()
        started = time.perf_counter()
        try:
            result = self._app.setup()
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            raise SetupError(
                f"{SETUP_FAILED} {bundle.source.class_name}:\n{_user_traceback(error, bundle.source.filename)}"
            ) from None
        self._metrics = AppMetrics(bundle.owner, bundle.app_name, serve.get_replica_context().replica_id.unique_id)
        self._metrics.replica_ready(setup_s=time.perf_counter() - started)

    def __serve_build_asgi_app__(self) -> Any:
        app = build_asgi_app(
            self._app,
            list(self._endpoints.values()),
            title=f"{self._bundle.owner}/{self._bundle.app_name}",
            timeout=self._bundle.options.request_timeout,
            version=self._bundle.code_version,
        )
        limited = BodyLimit(bare_root_as_slash(app), MAX_CALL_BYTES)
        return self._metrics.wrap(AuthMiddleware(limited, self._bundle.owner, self._bundle.options.app_auth, self._registry))

    def reconfigure(self, metadata: dict[str, Any]) -> None:
        """Serve hands the app's metadata (its `user_config`) here; nothing to apply."""
        self._metadata = metadata

    async def call_endpoint(self, name: str, payload: Any = None) -> Any:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise AttributeError(
                f"{self._bundle.owner}/{self._bundle.app_name} has no endpoint method {name!r} "
                f"(it has: {', '.join(sorted(self._endpoints))})"
            )
        kwargs = handle_kwargs(endpoint, payload)
        # A handle caller runs inside the cluster, where the owner's deployments live: it
        # reads file inputs with the owner's rights.
        with acting_for(self._bundle.owner):
            return await invoke(getattr(self._app, name), kwargs, self._bundle.options.request_timeout)

    async def call_path(self, path: str, payload: Any, request_id: str, caller: Optional[str] = None) -> dict[str, Any]:
        """A request from the queue: the endpoint at `path` answers `payload` as its HTTP
        route would, with what the endpoint printed meanwhile; `caller` is the user who
        submitted it (None: anonymous, to a public app), whose rights its file inputs get."""
        with acting_for(caller):
            return await self._call_path(path, payload, request_id)

    async def _call_path(self, path: str, payload: Any, request_id: str) -> dict[str, Any]:
        endpoint = next((e for e in self._endpoints.values() if e.spec.path.rstrip("/") == path.rstrip("/")
                         and not e.spec.is_websocket), None)
        if endpoint is None:
            return {"status_code": 404, "body": {"detail": f"Path {path} not found"}, "logs": []}
        method = getattr(self._app, endpoint.name)
        if is_streaming(method):
            detail = f"{path} streams its answer: call it directly, not through the queue"
            return {"status_code": 422, "body": {"detail": detail}, "logs": []}
        started = time.perf_counter()
        with request_logs() as logs:
            status_code, body = await answer(method, endpoint, payload, request_id, self._bundle.options.request_timeout)
        self._metrics.answered(status_code, time.perf_counter() - started)
        return {"status_code": status_code, "body": body, "logs": logs}

    async def __del__(self) -> None:
        app = getattr(self, "_app", None)
        if app is None:
            return
        if hasattr(self, "_metrics"):
            self._metrics.replica_stopped()
        try:
            result = app.teardown()
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("teardown() of %s/%s failed", self._bundle.owner, self._bundle.app_name)
