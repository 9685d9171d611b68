"""fal.toolkit's files on the platform: outputs stored by the replica, inputs read through it.

fal's toolkit saves `File`/`Image`/`Video`/`Audio` outputs through its built-in
repositories (`fal_v3` by default, `fal` as the fallback); here every one of those names
saves to the platform's store instead, over the control socket, so an unmodified app's
outputs come back as platform URLs with the app's key rules. Fetching one of the
platform's file URLs is answered by the replica, with the rights of the request's caller:
through fal's SSRF-safe fetcher (what `download_file`, `Image.to_pil()` and `File` inputs
use; it would refuse the platform's private address) and through `urlopen`.
"""

from __future__ import annotations

import email.message
import io
import os
import urllib.request
import urllib.response
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import control
from .logs import current_request

FILES_URL_VAR = "TENANTSERVE_FILES_URL"
# Hosts (`host` or `host:port`) on the operator's own network that fal's SSRF-safe fetcher
# may reach although their addresses are private: an internal model server, say.
DOWNLOAD_HOSTS_VAR = "TENANTSERVE_DOWNLOAD_HOSTS"


def _fetch(url: str) -> tuple[dict[str, Any], bytes]:
    return control.call("download", {"url": url}, request_id=current_request.get())


def _safe_request_for(original: Any, prefix: str) -> Any:
    """fal's SSRF-safe request, with the platform's own file URLs answered by the replica."""
    from fal.toolkit.utils.ssrf import SafeResponse

    def safe_request(url: str, **kwargs: Any) -> Any:
        if not url.startswith(prefix):
            return original(url, **kwargs)
        try:
            answer, data = _fetch(url)
        except control.ControlError as error:
            from fal.exceptions import AppException

            # The platform's refusal (403, 404) reaches the caller as that status.
            raise AppException(f"{url}: {error}", status_code=error.status) from None
        headers = {"content-type": answer.get("content_type", "application/octet-stream"),
                   "content-length": str(len(data))}
        if kwargs.get("on_response_headers"):
            kwargs["on_response_headers"](headers)
        if kwargs.get("max_size") is not None and len(data) > kwargs["max_size"]:
            from fal.toolkit.utils.download_utils import DownloadError

            raise DownloadError(f"{url} is larger than {kwargs['max_size']} bytes")
        if kwargs.get("body_mode") == "file" and kwargs.get("target_path"):
            Path(kwargs["target_path"]).write_bytes(data)
            return SafeResponse(200, headers)
        return SafeResponse(200, headers, data if kwargs.get("body_mode") == "content" else b"")

    return safe_request


def _resolver_for(original: Any, allowed: set[str]) -> Any:
    """fal's host check, letting the operator's named hosts through."""
    import socket

    def resolve(hostname: str, port: Optional[int]) -> list[str]:
        if hostname in allowed or f"{hostname}:{port}" in allowed:
            return sorted({info[4][0] for info in socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)})
        return original(hostname, port)

    return resolve


def _save(data: bytes, file_name: Optional[str], content_type: str) -> str:
    answer, _ = control.call("upload", {"file_name": file_name, "content_type": content_type}, data,
                             request_id=current_request.get())
    return answer["url"]


def repository_class() -> type:
    from fal.toolkit.file.types import FileData, FileRepository

    @dataclass
    class PlatformRepository(FileRepository):
        """The platform's file store, as a fal.toolkit repository."""

        def save(self, file: FileData, *args: Any, **kwargs: Any) -> str:
            return _save(file.data, file.file_name, file.content_type)

        def save_file(self, file_path: Any, content_type: str, *args: Any, **kwargs: Any) -> tuple[str, Any]:
            data = FileData(Path(file_path).read_bytes(), content_type, Path(file_path).name)
            return self.save(data), data

    return PlatformRepository


class PlatformFiles(urllib.request.BaseHandler):
    """`urlopen` for the platform's own file URLs; other URLs go on to urllib's handlers."""

    handler_order = 100

    def __init__(self, files_url: str) -> None:
        self._prefix = files_url.rstrip("/") + "/"

    def _open(self, request: urllib.request.Request) -> Optional[urllib.response.addinfourl]:
        url = request.full_url
        if not url.startswith(self._prefix):
            return None
        try:
            answer, data = _fetch(url)
        except control.ControlError as error:
            raise urllib.error.HTTPError(url, error.status, str(error), email.message.Message(), io.BytesIO()) from None
        headers = email.message.Message()
        headers["Content-Type"] = answer.get("content_type", "application/octet-stream")
        headers["Content-Length"] = str(len(data))
        response = urllib.response.addinfourl(io.BytesIO(data), headers, url, 200)
        response.msg = "OK"  # what urllib's response processor reads beside the code
        return response

    http_open = https_open = _open


def install() -> None:
    """Point fal.toolkit's repositories, its fetcher and urllib at the platform's store."""
    from fal.toolkit.file import file as toolkit_file
    from fal.toolkit.utils import ssrf

    repository = repository_class()
    for name in ("fal", "fal_v3", "cdn", "fal_v2"):
        toolkit_file.BUILT_IN_REPOSITORIES[name] = repository
    files_url = os.environ.get(FILES_URL_VAR)
    if files_url:
        ssrf._safe_request = _safe_request_for(ssrf._safe_request, files_url.rstrip("/") + "/")
        urllib.request.install_opener(urllib.request.build_opener(PlatformFiles(files_url)))
    allowed = {host.strip() for host in os.environ.get(DOWNLOAD_HOSTS_VAR, "").split(",") if host.strip()}
    if allowed:
        ssrf.resolve_and_validate_host = _resolver_for(ssrf.resolve_and_validate_host, allowed)
