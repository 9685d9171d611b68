from pathlib import Path

import fal
from pydantic import BaseModel

MARKER = "/tmp/tenantserve-teardown-marker"


class Out(BaseModel):
    ok: bool


class Tidy(fal.App):
    machine_type = "XS"

    def setup(self) -> None:
        self.resource = "open"

    @fal.endpoint("/")
    def ping(self) -> Out:
        return Out(ok=self.resource == "open")

    def teardown(self) -> None:
        Path(MARKER).write_text(f"closed {self.resource}")
