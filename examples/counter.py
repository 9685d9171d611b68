"""A CPU app that shows setup-once state, several endpoints and an Image output.

    platform deploy examples/counter.py::Counter
    curl -X POST localhost:8000/$USER/counter/ -H 'content-type: application/json' -d '{"name": "ada"}'
"""

import os

import fal
from fal.exceptions import AppException
from fal.toolkit import Image
from pydantic import BaseModel, Field


class Greeting(BaseModel):
    name: str = Field(description="Who to greet")


class Counted(BaseModel):
    message: str
    calls: int
    setup_calls: int
    replica_pid: int


class Swatch(BaseModel):
    color: str = Field(default="#3366ff", pattern=r"^#[0-9a-fA-F]{6}$")
    size: int = Field(default=32, ge=1, le=512)


class SwatchOut(BaseModel):
    image: Image


class Counter(fal.App, keep_alive=60, min_concurrency=0, max_concurrency=2):
    machine_type = "XS"

    def setup(self) -> None:
        self.setup_calls = getattr(self, "setup_calls", 0) + 1
        self.calls = 0

    @fal.endpoint("/")
    def greet(self, request: Greeting) -> Counted:
        if request.name == "nobody":
            raise AppException("nobody is not welcome here", status_code=403)
        self.calls += 1
        return Counted(
            message=f"Hello, {request.name}!",
            calls=self.calls,
            setup_calls=self.setup_calls,
            replica_pid=os.getpid(),
        )

    @fal.endpoint("/swatch")
    def swatch(self, request: Swatch) -> SwatchOut:
        from PIL import Image as PILImage

        return SwatchOut(image=Image.from_pil(PILImage.new("RGB", (request.size, request.size), request.color)))
