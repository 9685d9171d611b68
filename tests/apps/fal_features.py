"""fal SDK features an app written for fal uses: realtime endpoints, health checks, toolkit
videos, image-size inputs, weights downloaded once into /data."""

import os

import fal
from fal.exceptions import FieldException
from fal.toolkit import Video, download_model_weights
from fal.toolkit.image import ImageSizeInput, get_image_size
from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

WEIGHTS_URL = "http://127.0.0.1:1/weights.bin"  # the test writes its server's URL here


class SizeRequest(BaseModel):
    image_size: ImageSizeInput = "square_hd"


class Size(BaseModel):
    width: int
    height: int


class Frame(BaseModel):
    index: int


class Features(fal.App, keep_alive=60, min_concurrency=1, max_concurrency=2):
    machine_type = "XS"

    def setup(self) -> None:
        self.weights = download_model_weights(WEIGHTS_URL)
        self.instance = os.urandom(6).hex()

    @fal.endpoint("/size")
    def size(self, request: SizeRequest) -> Size:
        size = get_image_size(request.image_size)
        if size.width * size.height > 4096 * 4096:
            raise FieldException("image_size", "too many pixels")
        return Size(width=size.width, height=size.height)

    @fal.endpoint("/request")
    def request_info(self, request: Request) -> dict:
        current = self.current_request
        return {"probe": request.headers.get("x-probe"), "cookie": request.headers.get("cookie"),
                "request_id": current.request_id if current else None}

    @fal.endpoint("/moved")
    def moved(self) -> RedirectResponse:
        answer = RedirectResponse("/elsewhere", status_code=307)
        answer.set_cookie("session", "for-this-caller-only")
        return answer

    @fal.endpoint("/video")
    def video(self) -> Video:
        return Video.from_bytes(b"\x00\x00\x00\x18ftypmp42", content_type="video/mp4", file_name="clip.mp4")

    @fal.endpoint("/weights")
    def where(self) -> dict:
        return {"path": str(self.weights), "bytes": self.weights.read_bytes().decode(), "instance": self.instance}

    @fal.endpoint("/healthy", health_check=fal.HealthCheck(timeout_seconds=5, failure_threshold=2))
    def healthy(self) -> dict:
        return {"ok": True}

    @fal.realtime("/realtime")
    def double(self, frame: Frame) -> Frame:
        return Frame(index=frame.index * 2)
