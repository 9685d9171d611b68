import asyncio
import json
import time
from typing import AsyncIterator, Iterator

import fal
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


class Prompt(BaseModel):
    text: str


class Chunk(BaseModel):
    index: int
    text: str


class Talker(fal.App, keep_alive=60):
    machine_type = "XS"

    @fal.endpoint("/words")
    async def words(self, request: Prompt) -> AsyncIterator[Chunk]:
        for index, word in enumerate(request.text.split()):
            await asyncio.sleep(0.05)
            yield Chunk(index=index, text=word)

    @fal.endpoint("/lines")
    def lines(self, request: Prompt) -> Iterator[Chunk]:
        for index, word in enumerate(request.text.split()):
            time.sleep(0.01)
            if word == "boom":
                raise ValueError("cannot say boom")
            yield Chunk(index=index, text=word.upper())

    @fal.endpoint("/stream")
    def stream(self, request: Prompt) -> StreamingResponse:
        """Server-sent events, as fal's docs stream them (what `fal_client.stream` reads)."""
        def sse() -> Iterator[str]:
            for index, word in enumerate(request.text.split()):
                yield f"data: {json.dumps({'index': index, 'text': word})}\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    @fal.endpoint("/echo")
    def echo(self, request: Prompt) -> Chunk:
        return Chunk(index=0, text=request.text)

    @fal.endpoint("/ws", is_websocket=True)
    async def chat(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive_json()
                await websocket.send_json({"echo": message["text"], "length": len(message["text"])})
        except WebSocketDisconnect:
            pass
