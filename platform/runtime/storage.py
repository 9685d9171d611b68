"""The platform's file store: images and files that apps return through `fal.toolkit`, and
files users upload as inputs. Each is served at `<platform URL>/files/<id>/<name>`.

The store is any fsspec location: a directory under the state directory by default, or
an S3-compatible bucket (`TENANTSERVE_STORAGE=s3://bucket/prefix`, with `s3fs`), which
every node of a cluster must share. Each file is two objects: its bytes, `<id>`, and its
metadata, `<id>.json` (owner, auth mode, type, name, size, expiry). Ids are 32 random
URL-safe characters: a name cannot be guessed, and it is never a path.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Optional
from urllib.parse import quote, unquote, urlsplit

import fsspec

from tenantserve.platform.core import settings
from tenantserve.platform.runtime.auth import CALLER, refusal

FILES_ROUTE = "/files"
DEFAULT_TTL_S = 7 * 24 * 3600.0
COPY_CHUNK = 1 << 20
_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: Optional[str], fallback: str = "file") -> str:
    """A display name for URLs: no directories, no odd characters."""
    base = _UNSAFE_NAME.sub("_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return base[:128] or fallback


@dataclass(frozen=True)
class StoredFile:
    id: str
    owner: str
    auth: str  # who may read it over HTTP: the mode of the app that made it, or "private"
    content_type: str
    file_name: str
    file_size: int
    expires_at: float

    def path(self) -> str:
        return f"{FILES_ROUTE}/{self.id}/{quote(self.file_name)}"


class FileStore:
    def __init__(self, root: str, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._fs, self._base = fsspec.core.url_to_fs(root)
        self._fs.makedirs(self._base, exist_ok=True)

    @classmethod
    def configured(cls, state_dir: Path) -> "FileStore":
        root = settings.STORAGE.get() or str(state_dir / "files")
        return cls(root, settings.FILES_TTL.value())

    def _object(self, name: str) -> str:
        return f"{self._base.rstrip('/')}/{name}"

    def put(self, data: bytes, *, owner: str, auth: str, content_type: str, file_name: Optional[str],
            ttl_s: Optional[float] = None) -> StoredFile:
        """Store bytes; `ttl_s` may shorten the store's lifetime, never extend it."""
        return self.put_stream(io.BytesIO(data), len(data), owner=owner, auth=auth, content_type=content_type,
                               file_name=file_name, ttl_s=ttl_s)

    def put_stream(self, source: BinaryIO, size: int, *, owner: str, auth: str, content_type: str,
                   file_name: Optional[str], ttl_s: Optional[float] = None) -> StoredFile:
        """Store `size` bytes read from `source` in pieces, never all of them in memory."""
        lifetime = min(ttl_s, self.ttl_s) if ttl_s else self.ttl_s
        stored = StoredFile(
            id=secrets.token_urlsafe(24), owner=owner, auth=auth, content_type=content_type,
            file_name=safe_file_name(file_name), file_size=size, expires_at=time.time() + lifetime,
        )
        with self._fs.open(self._object(stored.id), "wb") as target:
            shutil.copyfileobj(source, target, COPY_CHUNK)
        self._fs.pipe_file(self._object(f"{stored.id}.json"), json.dumps(asdict(stored)).encode())
        return stored

    def find(self, file_id: str) -> Optional[StoredFile]:
        """The file's metadata; None for an unknown, malformed or expired id (an expired
        file is removed)."""
        if not _ID.match(file_id):
            return None
        try:
            stored = StoredFile(**json.loads(self._fs.cat_file(self._object(f"{file_id}.json"))))
        except (FileNotFoundError, ValueError, TypeError):
            return None
        if stored.expires_at <= time.time():
            self._remove(file_id)
            return None
        return stored

    def read(self, stored: StoredFile) -> bytes:
        return self._fs.cat_file(self._object(stored.id))

    def _remove(self, file_id: str) -> None:
        for name in (file_id, f"{file_id}.json"):
            try:
                self._fs.rm_file(self._object(name))
            except FileNotFoundError:
                pass

    def sweep(self) -> int:
        """Remove every expired file; returns how many."""
        removed = 0
        for path in self._fs.glob(self._object("*.json")):
            file_id = path.rsplit("/", 1)[-1].removesuffix(".json")
            if _ID.match(file_id) and self.find(file_id) is None:
                removed += 1
        return removed


def file_id_of(url: str, public_url: str) -> Optional[str]:
    """The id in a URL of this platform's store, or None for any other URL."""
    parts, base = urlsplit(url), urlsplit(public_url)
    if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
        return None
    prefix = base.path.rstrip("/") + FILES_ROUTE + "/"
    if not parts.path.startswith(prefix):
        return None
    return unquote(parts.path[len(prefix):]).split("/", 1)[0]


class AppStorage:
    """What `fal.toolkit` uses inside one app's replica: outputs stored under the app's
    owner and auth mode, and this platform's file URLs read straight from the store, with
    the rights of the user whose request is being served (`auth.CALLER`): an app reads a
    file input only if its caller could read that file over HTTP."""

    def __init__(self, store: FileStore, public_url: str, owner: str, auth: str) -> None:
        self.store, self.public_url, self.owner, self.auth = store, public_url.rstrip("/"), owner, auth

    def upload(self, data: bytes, content_type: str, file_name: Optional[str]) -> str:
        stored = self.store.put(data, owner=self.owner, auth=self.auth, content_type=content_type, file_name=file_name)
        return self.public_url + stored.path()

    def download(self, url: str) -> Optional[tuple[bytes, str]]:
        """The bytes behind one of this platform's file URLs, with their content type;
        None for other URLs.
        FileNotFoundError for an unknown or expired one, PermissionError for one the
        request's caller may not read."""
        file_id = file_id_of(url, self.public_url)
        if file_id is None:
            return None
        stored = self.store.find(file_id)
        if stored is None:
            raise FileNotFoundError(f"{url} is unknown or expired")
        caller = CALLER.get()
        if refusal(stored.auth, stored.owner, caller, what="file") is not None:
            who = f"user {caller}" if caller else "an anonymous caller"
            raise PermissionError(f"{url} is not readable by the caller of this request ({who})")
        return self.store.read(stored), stored.content_type
