"""The replica's side of the runner's control socket: the file store, with the platform's
rules. The runner sends uploads (stored under the app's owner and auth mode) and asks for
platform file URLs (read with the rights of the caller of the request being served); the
protocol is in `runner/control.py`."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Optional

from tenantserve.platform.core.bodies import MAX_UPLOAD_BYTES
from tenantserve.platform.runtime.auth import acting_for
from tenantserve.platform.runtime.storage import AppStorage

logger = logging.getLogger("ray.serve")

MAX_HEADER_BYTES = 64 * 1024


class FilesSocket:
    def __init__(self, storage: AppStorage, callers: dict[str, Optional[str]], default_caller: Optional[str]) -> None:
        self._storage, self._callers, self._default = storage, callers, default_caller
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=MAX_HEADER_BYTES)
        path.chmod(0o666)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            header, data = await self._answer(reader)
        except Exception as error:  # a broken request must not take the replica's loop down
            logger.exception("control socket request failed")
            header, data = {"error": f"the platform could not answer: {error}", "status": 500}, b""
        try:
            writer.write(json.dumps(header).encode() + b"\n" + data)
            await writer.drain()
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
        request = json.loads(await reader.readline())
        size = int(request.get("size", 0))
        if size > MAX_UPLOAD_BYTES:
            return {"error": f"a file may be at most {MAX_UPLOAD_BYTES // 2**20} MiB", "status": 413}, b""
        body = await reader.readexactly(size) if size else b""
        # A request's reads have its caller's rights; one the replica is not serving (ended, or
        # never one: an id a runner made up) has none but anonymous ones. Only work outside
        # requests (setup(), the app's own threads) reads with its owner's.
        request_id = request.get("request_id")
        caller = self._callers.get(request_id) if request_id else self._default
        if request.get("op") == "upload":
            url = await asyncio.to_thread(
                self._storage.upload, body, request.get("content_type") or "application/octet-stream",
                request.get("file_name"))
            return {"url": url}, b""
        if request.get("op") == "download":
            return await asyncio.to_thread(self._download, str(request.get("url")), caller)
        return {"error": f"unknown operation {request.get('op')!r}", "status": 400}, b""

    def _download(self, url: str, caller: Optional[str]) -> tuple[dict[str, Any], bytes]:
        with acting_for(caller):
            try:
                found = self._storage.download(url)
            except PermissionError as error:
                return {"error": str(error), "status": 403}, b""
            except FileNotFoundError as error:
                return {"error": str(error), "status": 404}, b""
        if found is None:
            return {"error": f"{url} is not a file of this platform", "status": 404}, b""
        data, content_type = found
        return {"size": len(data), "content_type": content_type}, data
