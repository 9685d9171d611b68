import fal
from pydantic import BaseModel


class Checked(BaseModel):
    ran: bool


class OwnHealth(fal.App, keep_alive=60):
    """An app with its own endpoint at /health: a POST like any other, behind the app's keys."""

    machine_type = "XS"

    @fal.endpoint("/health")
    def health(self) -> Checked:
        return Checked(ran=True)
