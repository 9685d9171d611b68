"""fal's own end-to-end shape of a container function: a build argument that becomes the
image's ENV, read by the served function."""

import os

import fal
from fal.container import ContainerImage


@fal.function(
    kind="container",
    image=ContainerImage.from_dockerfile_str(
        'FROM tenantserve-test-base\nARG OUTPUT="built incorrectly"\nENV OUTPUT="$OUTPUT"\n',
        build_args={"OUTPUT": "built with build args"},
    ),
    keep_alive=60,
    machine_type="XS",
    serve=True,
    max_concurrency=1,
)
def container_build_args_app() -> str:
    return os.environ["OUTPUT"]
