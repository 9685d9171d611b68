"""A container app whose Dockerfile is a file beside it (fal's ContainerImage.from_dockerfile)."""

from pathlib import Path

import fal
from fal.container import ContainerImage


class FromFile(fal.App, kind="container", image=ContainerImage.from_dockerfile(Path(__file__).parent / "Dockerfile")):
    machine_type = "XS"

    @fal.endpoint("/")
    def greet(self) -> dict:
        return {"greeting": Path("/etc/greeting").read_text().strip()}
