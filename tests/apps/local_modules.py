import fal
from helper_pkg.words import shout
from pydantic import BaseModel


class Shout(BaseModel):
    text: str


class Shouter(fal.App):
    machine_type = "XS"
    local_python_modules = ["helper_pkg"]

    @fal.endpoint("/")
    def shout(self, request: Shout) -> Shout:
        return Shout(text=shout(request.text))
