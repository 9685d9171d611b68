import fal
from pydantic import BaseModel


class Note(BaseModel):
    text: str


class Tiny(fal.App, keep_alive=1, min_concurrency=0, max_concurrency=1):
    """A trivial app that sits at zero replicas between calls."""

    machine_type = "XS"

    @fal.endpoint("/")
    def echo(self, request: Note) -> Note:
        return request
