import os
import time

import fal
from pydantic import BaseModel

# This runner process's id: inside its PID namespace every runner's pid is the same.
RUNNER = int.from_bytes(os.urandom(7), "big")


class Hold(BaseModel):
    seconds: float = 0


class Served(BaseModel):
    pid: int


class Sleepy(fal.App, keep_alive=2, min_concurrency=0, max_concurrency=1, max_multiplexing=1):
    machine_type = "XS"

    @fal.endpoint("/")
    def serve(self, request: Hold) -> Served:
        time.sleep(request.seconds)
        return Served(pid=RUNNER)


class Steady(Sleepy, keep_alive=2, min_concurrency=1, max_concurrency=2, max_multiplexing=2, name="steady"):
    pass
