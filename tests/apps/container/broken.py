"""A container app whose Dockerfile fails to build."""

import fal
from fal.container import ContainerImage


class FromImage(
    fal.App,
    kind="container",
    image=ContainerImage.from_dockerfile_str("FROM tenantserve-test-base\nRUN echo building && exit 3\n"),
):
    machine_type = "XS"

    @fal.endpoint("/")
    def describe(self) -> dict:
        return {"greeting": "never built"}
