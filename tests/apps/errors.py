"""Endpoints that fail in each way fal clients know."""

import asyncio
import time

import fal
from fal.exceptions import AppException, FieldException
from fastapi import WebSocket
from pydantic import BaseModel


class Sleep(BaseModel):
    seconds: float


class Value(BaseModel):
    value: int


class Errors(fal.App, request_timeout=3, max_multiplexing=4):
    machine_type = "XS"

    @fal.endpoint("/app-exception")
    def app_exception(self) -> Value:
        raise AppException("quota exceeded for this input", status_code=429)

    @fal.endpoint("/field-exception")
    def field_exception(self, request: Value) -> Value:
        if request.value < 0:
            raise FieldException("value", "must not be negative")
        return request

    @fal.endpoint("/crash")
    def crash(self) -> Value:
        raise ZeroDivisionError("the model divided by zero")

    @fal.endpoint("/oom")
    def oom(self) -> Value:
        class OutOfMemoryError(RuntimeError):
            """What torch.cuda raises."""

        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    @fal.endpoint("/slow")
    async def slow(self, request: Sleep) -> Value:
        await asyncio.sleep(request.seconds)
        return Value(value=1)

    @fal.endpoint("/slow-sync")
    def slow_sync(self, request: Sleep) -> Value:
        time.sleep(request.seconds)
        return Value(value=2)


class Chat(fal.App):
    machine_type = "XS"

    @fal.endpoint("/ws", is_websocket=True)
    async def chat(self, websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())
