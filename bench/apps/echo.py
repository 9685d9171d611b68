import fal
from pydantic import BaseModel


class Message(BaseModel):
    text: str


class Echo(fal.App, min_concurrency=1, max_concurrency=1, max_multiplexing=16):
    machine_type = "XS"

    @fal.endpoint("/")
    def echo(self, request: Message) -> Message:
        return request


class ColdEcho(Echo, keep_alive=1, min_concurrency=0, max_concurrency=1, max_multiplexing=1, name="cold-echo"):
    pass
