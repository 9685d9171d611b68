"""A container app as fal's docs write one: a Dockerfile string with a build argument,
a file the Dockerfile COPYs from the build context into the image's /app (its WORKDIR),
a package only the image has."""

from pathlib import Path

import fal
from fal.container import ContainerImage

# The tests build the base image locally (a Debian root made with debootstrap): no registry.
DOCKERFILE = """
FROM tenantserve-test-base
ARG GREETING=hello
RUN echo "$GREETING from the image" > /etc/greeting
COPY motd.txt /app/motd.txt
WORKDIR /app
RUN echo 'ANSWER = 42' > /usr/lib/python3/dist-packages/image_only.py
ENV IMAGE_LABEL=built-on-the-node
"""


class FromImage(
    fal.App,
    kind="container",
    image=ContainerImage.from_dockerfile_str(
        DOCKERFILE, build_args={"GREETING": "hi"}, context_dir=Path(__file__).parent),
):
    machine_type = "XS"
    keep_alive = 60

    def setup(self) -> None:
        import image_only  # installed by the Dockerfile, not on the node

        self.answer = image_only.ANSWER

    @fal.endpoint("/")
    def describe(self) -> dict:
        import os
        import platform
        import sys
        from pathlib import Path

        return {
            "greeting": Path("/etc/greeting").read_text().strip(),
            "motd": Path("motd.txt").read_text().strip(),  # the runner starts in the image's WORKDIR
            "answer": self.answer,
            "python": sys.executable,
            "version": platform.python_version(),
            "label": os.environ.get("IMAGE_LABEL"),
            "uid": os.getuid(),
            "debian": Path("/etc/debian_version").read_text().strip(),
            "root": sorted(os.listdir("/")),
        }
