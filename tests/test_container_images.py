"""fal's container apps: the platform builds the app's Dockerfile on the node (buildah), shows
the build as the deploy runs, caches it, and runs the app's runner inside the image, sandboxed,
with fal's SDK injected. The base image is built locally (debootstrap): no registry."""

from __future__ import annotations

import socket
import subprocess
from typing import Iterator

import pytest

from helpers import (
    APPS,
    TEST_BASE_IMAGE,
    deployed,
    ensure_test_base_image,
    free_port,
    remove_image_containers,
    wait_until,
)

APP = f"{APPS}/container/app.py::FromImage"
# What a runner's / holds: the image's own folders (a Debian root and the app's /app), the
# node's /proc and /dev, the runner's folders and the platform's layer, nothing else of the node.
IMAGE_TOP = {"app", "bin", "boot", "home", "lib", "lib64", "media", "mnt", "opt", "root", "sbin", "srv", "usr", "var"}
RUNNER_TOP = {"data", "dev", "etc", "proc", "run", "tenantserve", "tmp"}


@pytest.fixture(scope="module")
def base_image() -> None:
    ensure_test_base_image()


def test_a_container_app_runs_in_the_image_it_built_on_the_node(cli, http, base_image) -> None:
    first = deployed(cli, APP, "--user", "yara")
    assert "building with buildah" in first.output and "RUN echo \"$GREETING from the image\"" in first.output
    answer = http.post("/yara/from-image/", json={}).json()
    assert (answer["greeting"], answer["motd"], answer["answer"]) == (
        "hi from the image", "a file from the build context", 42)  # build arg, COPY, the image's own package
    assert answer["python"] == "/usr/bin/python3" and answer["debian"].startswith("12.")  # the image's interpreter
    assert answer["label"] == "built-on-the-node" and answer["uid"] != 0  # its ENV; the owner's OS user
    assert set(answer["root"]) == IMAGE_TOP | RUNNER_TOP

    again = deployed(cli, APP, "--user", "yara", "--app-name", "from-image-again")
    assert "reusing the one built on this node" in again.output and "STEP" not in again.output
    assert http.post("/yara/from-image-again/", json={}).json()["answer"] == 42
    assert cli("apps", "delete", "from-image-again", "--user", "yara").exit_code == 0


def test_a_build_that_fails_fails_the_deploy_with_its_log_and_the_app_keeps_serving(cli, http, base_image) -> None:
    deployed(cli, APP, "--user", "yara")
    broken = cli("deploy", f"{APPS}/container/broken.py::FromImage", "--user", "yara", "--auth", "public")
    assert broken.exit_code == 1
    assert "RUN echo building && exit 3" in broken.output and "exit status 3" in broken.output
    assert http.post("/yara/from-image/", json={}).json()["greeting"] == "hi from the image"
    assert cli("apps", "delete", "from-image", "--user", "yara").exit_code == 0


def test_a_dockerfile_beside_the_app_builds_and_its_runner_starts_without_it(cli, http, base_image) -> None:
    """fal's `from_dockerfile(path)`: the client's text is built; the runner, which makes the
    class again inside the image where that file is not, starts all the same."""
    deployed(cli, f"{APPS}/container/from_file.py::FromFile", "--user", "yara")
    assert http.post("/yara/from-file/", json={}).json() == {"greeting": "from the Dockerfile beside the app"}
    assert cli("apps", "delete", "from-file", "--user", "yara").exit_code == 0


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_served_function_in_a_container_reads_its_images_environment(cli, http, base_image) -> None:
    deployed(cli, f"{APPS}/container/function.py::container_build_args_app", "--user", "yara")
    assert http.post("/yara/container-build-args-app/", json={}).json() == "built with build args"
    assert cli("apps", "delete", "container-build-args-app", "--user", "yara").exit_code == 0


@pytest.fixture
def registry(tmp_path, base_image) -> Iterator[str]:
    """A registry of the operator's (Docker's distribution, Debian's docker-registry) holding
    the test base image where a Docker Hub mirror would hold python:3.11."""
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'blobs'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _listening(port), "the registry to listen", timeout=30, every=0.2)
        subprocess.run(["buildah", "push", "--tls-verify=false", TEST_BASE_IMAGE,
                        f"docker://127.0.0.1:{port}/library/python:3.11-tenantserve"], check=True, capture_output=True)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.cluster  # the slow tier: a registry, a push and a build (no Ray cluster)
def test_base_images_come_from_the_registry_the_operator_names(registry, tmp_path, monkeypatch) -> None:
    from tenantserve.adapters.fal.options import ImageOptions
    from tenantserve.platform.cluster import images

    monkeypatch.setenv("TENANTSERVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TENANTSERVE_IMAGE_REGISTRY", registry)
    lines: list[str] = []
    dockerfile = "FROM python:3.11-tenantserve\nRUN echo pulled > /etc/greeting\n"  # Docker Hub's short name
    try:
        built = images.ensure(ImageOptions(dockerfile=dockerfile), {}, "regina", 3, log=lines.append)
        assert (built.root / "etc" / "greeting").read_text() == "pulled\n" and built.python == "/usr/bin/python3"
        # Docker Hub's name, pulled from the operator's registry (this machine reaches no other).
        assert "Trying to pull docker.io/library/python:3.11-tenantserve..." in lines
    finally:
        remove_image_containers(tmp_path / "home")
