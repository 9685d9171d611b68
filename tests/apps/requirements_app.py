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


class Where(BaseModel):
    prefix: str
    humanize: str


class WhereHumanized(Humanized, name="where-humanized"):
    @fal.endpoint("/where")
    def where(self) -> Where:
        import sys

        return Where(prefix=sys.prefix, humanize=self.humanize.__file__)


class BrokenRequirements(fal.App, name="humanized"):
    """A redeploy of `humanized` whose package does not exist."""

    machine_type = "XS"
    requirements = ["tenantserve-no-such-package==1.0"]

    @fal.endpoint("/")
    def natural(self) -> Text:
        return Text(text="never")
