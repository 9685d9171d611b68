"""An app whose answer and setup() behaviour come from environment-free constants,
rewritten by tests to make a new revision."""

import fal
from pydantic import BaseModel

VERSION = "v1"
FAIL_SETUP = False


class Answer(BaseModel):
    version: str
    calls: int


class Versioned(fal.App):
    machine_type = "XS"

    def setup(self) -> None:
        if FAIL_SETUP:
            raise RuntimeError("checkpoint file is corrupt")
        self.calls = 0

    @fal.endpoint("/")
    def answer(self) -> Answer:
        self.calls += 1
        return Answer(version=VERSION, calls=self.calls)
