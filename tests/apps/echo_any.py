from typing import Any

import fal
from pydantic import BaseModel


class Payload(BaseModel):
    value: Any = None


class EchoAny(fal.App, keep_alive=60):
    """Answers whatever JSON value it is given: what a body can carry in and back out."""

    machine_type = "XS"

    @fal.endpoint("/")
    def echo(self, request: Payload) -> Payload:
        return request

    @fal.endpoint("/nan")
    def nan(self) -> dict:
        return {"value": float("nan")}  # a plain dict keeps its NaN (a pydantic model would send null)
