import fal
from pydantic import BaseModel


class Size(BaseModel):
    size: int


class Text(BaseModel):
    text: str


class Humanized(fal.App):
    machine_type = "XS"
    requirements = ["humanize==4.9.0"]

    def setup(self) -> None:
        import humanize

        self.humanize = humanize

    @fal.endpoint("/")
    def natural(self, request: Size) -> Text:
        return Text(text=self.humanize.naturalsize(request.size))


class NoHumanize(fal.App, name="no-humanize"):
    machine_type = "XS"

    @fal.endpoint("/")
    def probe(self) -> Text:
        try:
            import humanize  # noqa: F401
        except ImportError:
            return Text(text="absent")
        return Text(text="present")
