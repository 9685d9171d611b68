import hashlib

import fal
from pydantic import BaseModel


class Blob(BaseModel):
    data: str


class Digest(BaseModel):
    length: int
    sha256: str


class Size(BaseModel):
    megabytes: int


class Bulk(fal.App, name="bulk"):
    """Large bodies, in and out."""

    machine_type = "XS"

    @fal.endpoint("/digest")
    def digest(self, request: Blob) -> Digest:
        return Digest(length=len(request.data), sha256=hashlib.sha256(request.data.encode()).hexdigest())

    @fal.endpoint("/blob")
    def blob(self, request: Size) -> Blob:
        return Blob(data="x" * (request.megabytes * 1024 * 1024))
