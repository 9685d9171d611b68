"""`fal.toolkit`: files and images that endpoints return or accept.

Inside a replica the platform plugs in its file store (`use_storage`): outputs become URLs
on the platform's own host (`/files/...`) and inputs with such URLs are read from the
store. `repository="in_memory"`, or code running outside a replica, gives `data:` URLs.
The JSON shape (`url`, `content_type`, `file_name`, `file_size`, plus `width`/`height`
for images) is what fal clients read.
"""

from __future__ import annotations

import base64
import io
import mimetypes
from pathlib import Path
from typing import Any, Optional, Protocol

import httpx
from pydantic import BaseModel, Field

from .exceptions import AppException


class Storage(Protocol):
    def upload(self, data: bytes, content_type: str, file_name: Optional[str]) -> str: ...

    def download(self, url: str) -> Optional[bytes]: ...


_storage: Optional[Storage] = None


def use_storage(storage: Optional[Storage]) -> None:
    """Where this process stores outputs and reads the platform's file URLs."""
    global _storage
    _storage = storage


def _data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


class File(BaseModel):
    url: str = Field(description="Where the file's bytes can be read")
    content_type: Optional[str] = Field(default=None, description="The MIME type of the file")
    file_name: Optional[str] = Field(default=None, description="The name of the file")
    file_size: Optional[int] = Field(default=None, description="The size of the file in bytes")

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        content_type: Optional[str] = None,
        file_name: Optional[str] = None,
        repository: Optional[str] = None,
        **extra: Any,
    ) -> "File":
        content_type = content_type or (mimetypes.guess_type(file_name)[0] if file_name else None)
        content_type = content_type or "application/octet-stream"
        if repository == "in_memory" or _storage is None:
            url = _data_url(data, content_type)
        else:
            url = _storage.upload(data, content_type, file_name)
        return cls(
            url=url,
            content_type=content_type,
            file_name=file_name,
            file_size=len(data),
            **extra,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        content_type: Optional[str] = None,
        repository: Optional[str] = None,
    ) -> "File":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file")
        return cls.from_bytes(path.read_bytes(), content_type=content_type, file_name=path.name, repository=repository)

    def as_bytes(self) -> bytes:
        """The file's content: from a `data:` URL, the platform's store, or over HTTP."""
        if self.url.startswith("data:"):
            _, _, payload = self.url.partition(",")
            return base64.b64decode(payload)
        try:
            stored = _storage.download(self.url) if _storage is not None else None
        except PermissionError as error:
            raise AppException(str(error), status_code=403) from None
        except FileNotFoundError as error:
            raise AppException(str(error), status_code=404) from None
        if stored is not None:
            return stored
        response = httpx.get(self.url, follow_redirects=True, timeout=60)
        response.raise_for_status()
        return response.content

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.as_bytes())
        return path


class Image(File):
    width: Optional[int] = Field(default=None, description="The width of the image in pixels")
    height: Optional[int] = Field(default=None, description="The height of the image in pixels")

    @classmethod
    def from_pil(
        cls,
        pil_image: Any,
        format: str = "png",
        file_name: Optional[str] = None,
        repository: Optional[str] = None,
    ) -> "Image":
        fmt = format.lower()
        buffer = io.BytesIO()
        pil_image.save(buffer, format="JPEG" if fmt == "jpg" else fmt.upper())
        return cls.from_bytes(
            buffer.getvalue(),
            content_type=f"image/{'jpeg' if fmt == 'jpg' else fmt}",
            file_name=file_name or f"image.{fmt}",
            repository=repository,
            width=pil_image.width,
            height=pil_image.height,
        )

    @classmethod
    def from_bytes(  # type: ignore[override]
        cls,
        data: bytes,
        content_type: Optional[str] = None,
        file_name: Optional[str] = None,
        repository: Optional[str] = None,
        **extra: Any,
    ) -> "Image":
        if "width" not in extra or "height" not in extra:
            size = _image_size(data)
            if size:
                extra = {"width": size[0], "height": size[1], **extra}
        return super().from_bytes(data, content_type=content_type, file_name=file_name, repository=repository, **extra)

    def to_pil(self) -> Any:
        from PIL import Image as PILImage

        return PILImage.open(io.BytesIO(self.as_bytes()))


def _image_size(data: bytes) -> Optional[tuple[int, int]]:
    try:
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except Exception:
        return None
