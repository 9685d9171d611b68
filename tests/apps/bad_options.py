import fal
from pydantic import BaseModel


class Out(BaseModel):
    ok: bool


class Typo(fal.App, keep_alve=30):
    @fal.endpoint("/")
    def run(self) -> Out:
        return Out(ok=True)


class AttributeTypo(fal.App):
    machine_typ = "GPU-A100"

    @fal.endpoint("/")
    def run(self) -> Out:
        return Out(ok=True)


class BadMachine(fal.App):
    machine_type = "XXL"

    @fal.endpoint("/")
    def run(self) -> Out:
        return Out(ok=True)
