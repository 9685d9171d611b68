"""Python handles to deployed apps, for drivers and for other Serve deployments.

    handle = tenantserve.get_handle("alice/my-app")
    output = handle.run({"prompt": "a rhino"})            # from a driver: blocks
    output = await handle.run.remote({"prompt": "a rhino"})  # inside a deployment

An endpoint is called by its method name with a pydantic model, a dict or nothing, and
returns the endpoint's JSON answer (its output model as a dict): the app's classes live in
its runner, another process. An error answer raises the replica's `EndpointError`.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from tenantserve.platform.core.naming import parse_app_ref, serve_app_name


class EndpointCaller:
    def __init__(self, handle: DeploymentHandle, name: str) -> None:
        self._handle = handle
        self._name = name

    def remote(self, payload: Any = None, /, **fields: Any) -> DeploymentResponse:
        """Start a call; `await` the response in a deployment or call `.result()` in a driver."""
        if fields:
            payload = {**(payload or {}), **fields}
        if hasattr(payload, "model_dump"):
            payload = payload.model_dump()
        return self._handle.call_endpoint.remote(self._name, payload)

    def __call__(self, payload: Any = None, /, **fields: Any) -> Any:
        return self.remote(payload, **fields).result()


class AppHandle:
    def __init__(self, owner: str, app: str, handle: DeploymentHandle) -> None:
        self.owner = owner
        self.app = app
        self._handle = handle

    def __getattr__(self, endpoint: str) -> EndpointCaller:
        if endpoint.startswith("_"):
            raise AttributeError(endpoint)
        return EndpointCaller(self._handle, endpoint)

    def __repr__(self) -> str:
        return f"AppHandle({self.owner}/{self.app})"


def get_handle(ref: str, *, address: str | None = None) -> AppHandle:
    """A handle to `user/app`; connects this process to the platform's cluster if needed."""
    owner, app = parse_app_ref(ref)
    if not ray.is_initialized():
        from tenantserve.platform.cluster.ray_cluster import connect

        connect(address, start=False)
    return AppHandle(owner, app, serve.get_app_handle(serve_app_name(owner, app)))
