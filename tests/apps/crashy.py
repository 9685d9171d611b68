"""Endpoints that take their runner down, or hang past request_timeout."""

import ctypes
import os
import time
from pathlib import Path

import fal


class Crashy(fal.App, request_timeout=2, keep_alive=60):
    machine_type = "XS"

    def setup(self) -> None:
        self.started = time.time()

    @fal.endpoint("/")
    def whoami(self) -> dict:
        return {"started": self.started}

    @fal.endpoint("/exit")
    def exit(self) -> dict:
        os._exit(3)

    @fal.endpoint("/segfault")
    def segfault(self) -> dict:
        ctypes.string_at(0)
        return {}

    @fal.endpoint("/hang")
    def hang(self) -> dict:
        time.sleep(5)
        Path("/data/hang-finished").write_text("the work went on after its 504")
        return {}
