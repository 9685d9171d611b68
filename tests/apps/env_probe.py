import os
from typing import Optional

import fal
from pydantic import BaseModel

# This runner process's id: inside its PID namespace every runner's pid is the same.
RUNNER = int.from_bytes(os.urandom(7), "big")


class Name(BaseModel):
    name: str


class Value(BaseModel):
    value: Optional[str]
    pid: int


class EnvProbe(fal.App, keep_alive=300, min_concurrency=1):
    machine_type = "XS"

    @fal.endpoint("/")
    def read(self, request: Name) -> Value:
        return Value(value=os.environ.get(request.name), pid=RUNNER)


class PickyProbe(EnvProbe, secrets=["REGION"], name="picky-probe"):
    """Asks for one of its owner's secrets (fal's `secrets=`): it gets that one only."""
