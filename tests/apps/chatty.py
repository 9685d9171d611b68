import warnings

import fal
from pydantic import BaseModel


class Out(BaseModel):
    ok: bool


class Chatty(fal.App):
    machine_type = "XS"

    def setup(self) -> None:
        print("loading the weights")

    @fal.endpoint("/")
    def talk(self) -> Out:
        print("handling a request")
        warnings.warn("this model is deprecated")
        return Out(ok=True)

    @fal.endpoint("/fail")
    def fail(self) -> Out:
        raise KeyError("missing-tensor")
