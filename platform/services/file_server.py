"""The Serve app at `/files`: reads stored files over HTTP (with the key rules of the app
that made them) and takes uploads, which apps then accept as `File`/`Image` inputs.

No `from __future__ import annotations` here: Serve's class-based ingress rebuilds the
route signatures, and string annotations (`request: "Request"`) become query parameters.
"""

import asyncio
import json
import logging
import tempfile
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve import RunTarget
from sqlalchemy.exc import OperationalError

from tenantserve.platform.cluster import ray_private
from tenantserve.platform.core.bodies import MAX_UPLOAD_BYTES, BodyError, declared_length, limited
from tenantserve.platform.runtime.auth import KeyCache, refusal
from tenantserve.platform.runtime.busy import registry_busy
from tenantserve.platform.runtime.storage import FILES_ROUTE, FileStore
from tenantserve.platform.store.registry import Registry

logger = logging.getLogger("ray.serve")

APP_NAME = "files"
SPOOL_BYTES = 8 << 20
SWEEP_EVERY_S = 600
LIFECYCLE_HEADER = "x-fal-object-lifecycle-preference"  # fal's way to ask for a shorter lifetime

api = FastAPI(title="tenantserve files")
api.add_exception_handler(OperationalError, registry_busy)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers={"www-authenticate": "Key"} if status == 401 else None)


def _lifetime(request: Request) -> Optional[float]:
    try:
        preference = json.loads(request.headers.get(LIFECYCLE_HEADER) or "{}")
        seconds = float(preference.get("expiration_duration_seconds") or 0)
    except (ValueError, TypeError, AttributeError):
        return None
    return seconds if seconds > 0 else None


@serve.ingress(api)
class FileServer:
    async def __init__(self, config: dict[str, Any]) -> None:
        self.store = FileStore(config["files_root"], config["files_ttl_s"])
        self.public_url = config["public_url"].rstrip("/")
        self.registry = Registry(config["registry_url"], migrate_schema=False)
        self.keys = KeyCache(self.registry)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.store.sweep)
            except Exception:  # a store hiccup must not end the sweeping
                logger.exception("sweeping expired files failed")
            await asyncio.sleep(SWEEP_EVERY_S)

    @api.post("/upload")
    async def upload(self, request: Request) -> Response:
        """The request body becomes a file, private to the uploader over HTTP; its URL is
        what an app's `File`/`Image` input takes. The body goes to the store in pieces
        (through a spool file past SPOOL_BYTES), and is refused as soon as it passes
        MAX_UPLOAD_BYTES."""
        user = await self.keys.caller(request.headers.get("authorization"))
        if user is None:
            return _error(401, "Uploading needs an API key: send 'Authorization: Key <key_id>:<key_secret>'")
        try:
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
                size = 0
                async for chunk in limited(request.stream(), MAX_UPLOAD_BYTES, declared_length(request.headers), hint=""):
                    size += len(chunk)
                    spool.write(chunk)
                spool.seek(0)
                name = request.headers.get("x-fal-file-name") or request.query_params.get("file_name")
                content_type = request.headers.get("content-type") or "application/octet-stream"
                stored = await asyncio.to_thread(
                    self.store.put_stream, spool, size, owner=user, auth="private", content_type=content_type,
                    file_name=name, ttl_s=_lifetime(request),
                )
        except BodyError as error:
            return error.response()
        return JSONResponse({"url": self.public_url + stored.path(), "content_type": stored.content_type,
                             "file_name": stored.file_name, "file_size": stored.file_size})

    @api.get("/{file_id}/{file_name}")
    async def download(self, file_id: str, file_name: str, request: Request) -> Response:
        stored = await asyncio.to_thread(self.store.find, file_id)
        if stored is None:
            return _error(404, "File not found (unknown or expired)")
        user = None
        if stored.auth != "public":
            user = await self.keys.caller(request.headers.get("authorization"))
        refused = refusal(stored.auth, stored.owner, user, what="file")
        if refused is not None:
            return _error(*refused)
        data = await asyncio.to_thread(self.store.read, stored)
        cache = "public, max-age=3600" if stored.auth == "public" else "private, no-store"
        return Response(data, media_type=stored.content_type, headers={
            "cache-control": cache, "content-disposition": f'inline; filename="{stored.file_name}"',
        })


def file_server_target(config: dict[str, Any], version: str) -> RunTarget:
    deployment = serve.deployment(FileServer, name="FileServer", num_replicas=1,
                                  ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=64)
    deployment = ray_private.pinned(deployment, version)
    return RunTarget(target=deployment.bind(config), name=APP_NAME, route_prefix=FILES_ROUTE)
