"""Container apps before any build (no cluster): fal's ContainerImage read as the platform
builds it, what it refuses and why, the build context shipped, the registry the nodes pull
from, and the sandbox a runner gets inside an image."""

from __future__ import annotations

import os
from pathlib import Path

import fal
import pytest
from fal.container import ContainerImage

from tenantserve.adapters.fal import sandbox
from tenantserve.adapters.fal.bundle import image_files
from tenantserve.adapters.fal.loader import AppLoadError, read_source
from tenantserve.adapters.fal.options import ImageOptions, OptionsError, read_options
from tenantserve.adapters.fal.upload import collect, read_sandboxed
from tenantserve.platform.cluster.images import ImageBuildError, _python_platform, ensure, registries_conf
from tenantserve_runner import ENVIRONMENT_FD_VAR

from helpers import APPS


def _app(**options) -> type:
    class Imaged(fal.App, **options):
        @fal.endpoint("/")
        def answer(self) -> dict:
            return {}

    return Imaged


def test_a_container_images_dockerfile_build_args_and_context_are_read() -> None:
    _, app_class = read_source(f"{APPS}/container/app.py::FromImage")
    image = read_options(app_class).image
    assert image is not None and image.dockerfile.strip().startswith("FROM tenantserve-test-base")
    assert image.build_args == {"GREETING": "hi"} and image.copies == ["motd.txt"]
    shipped = image_files(app_class, read_options(app_class))
    assert list(shipped) == ["motd.txt"]


@pytest.mark.parametrize("options, reason", [
    ({"kind": "container"}, "needs image="),
    ({"kind": "conda"}, "not conda"),
    ({"kind": "container", "image": ContainerImage.from_dockerfile_str(
        "FROM x", registries={"r.io": {"username": "u", "password": "p"}})}, "TENANTSERVE_IMAGE_REGISTRY"),
    ({"kind": "container", "image": ContainerImage.from_dockerfile_str("FROM x", entrypoint="/bin/sh")},
     "not its entrypoint"),
    ({"kind": "container", "image": "python:3.11"}, "must be a fal.ContainerImage"),
])
def test_what_the_platform_cannot_build_is_refused_saying_why(options, reason) -> None:
    with pytest.raises(OptionsError, match=reason):
        read_options(_app(**options))


@pytest.mark.parametrize("dockerfile, reason", [
    ("FROM x\nRUN --mount=type=bind,from=y,target=/h,rw cat /h/etc/shadow", "RUN --mount: not allowed"),
    ("FROM x\nRUN --mount=type=cache,id=../../..,target=/c \\\n  ls /c", "RUN --mount: not allowed"),
    ("FROM x\nRUN --network=host curl 127.0.0.1:8265", "RUN --network: not allowed"),
    ("FROM x\nRUN --security=insecure id", "RUN --security: not allowed"),
    ("FROM x\nONBUILD RUN --mount=type=cache,id=../..,target=/c ls", "RUN --mount: not allowed"),
    ("FROM x\nADD http://169.254.169.254/latest/meta-data /m", "ADD from a URL"),
])
def test_dockerfile_steps_that_reach_past_the_build_are_refused(dockerfile, reason) -> None:
    with pytest.raises(OptionsError, match=reason):
        read_options(_app(kind="container", image=ContainerImage.from_dockerfile_str(dockerfile)))


def test_an_image_whose_etc_is_a_link_gets_no_runner(tmp_path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to("/")
    folders = {name: tmp_path / name for name in ("app", "scratch", "data", "sockets")}
    image = sandbox.ImageRoot(root, tmp_path, tmp_path, tmp_path / "nsswitch.conf")
    with pytest.raises(sandbox.SandboxUnavailable, match="/etc is a link"):
        sandbox.command(["python3"], sandbox.Mounts(**folders, image=image), {})


def test_python_version_of_a_container_app_is_the_images_to_check() -> None:
    """The image's interpreter is known only once it is built: the node's is not asked."""
    app_class = _app(kind="container", python_version="3.9", image=ContainerImage.from_dockerfile_str("FROM x"))
    assert read_options(app_class).python_version == "3.9"


def test_a_copy_source_missing_from_the_context_fails_on_the_developers_machine(tmp_path) -> None:
    app_class = _app(kind="container", image=ContainerImage.from_dockerfile_str(
        "FROM x\nCOPY weights/ /w\n", context_dir=tmp_path))
    with pytest.raises(AppLoadError, match="'weights/' matches nothing in the build context"):
        image_files(app_class, read_options(app_class))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "a.bin").write_bytes(b"\0")
    assert list(image_files(app_class, read_options(app_class))) == ["weights/a.bin"]


def test_the_operators_registry_serves_docker_hub_and_short_names() -> None:
    conf = registries_conf("http://10.1.2.3:5000/mirror")
    assert 'unqualified-search-registries = ["docker.io"]' in conf
    assert 'prefix = "docker.io"\nlocation = "10.1.2.3:5000/mirror"\ninsecure = true' in conf
    assert "insecure = false" in registries_conf("registry.internal")


def test_the_layer_is_resolved_for_the_images_c_library() -> None:
    machine = os.uname().machine
    assert _python_platform(("glibc", "2.36")) == f"{machine}-manylinux_2_36"
    assert _python_platform(("", "")) == f"{machine}-unknown-linux-musl"


def test_a_runner_in_an_image_sees_the_images_system_not_the_nodes(tmp_path) -> None:
    root = tmp_path / "rootfs"
    for folder in ("usr/bin", "etc", "var", "proc"):
        (root / folder).mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    site, runner = tmp_path / "site", tmp_path / "tenantserve_runner"
    site.mkdir()
    runner.mkdir()
    folders = {name: tmp_path / name for name in ("app", "scratch", "data", "sockets")}
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("passwd: files\n")
    mounts = sandbox.Mounts(**folders, image=sandbox.ImageRoot(root, site, runner, nsswitch))
    (root / "etc" / "ld.so.preload").write_text("/usr/lib/evil.so\n")
    (root / "etc" / "nsswitch.conf").write_text("passwd: evil\n")
    argv = sandbox.command(["/usr/bin/python3", "-m", "tenantserve_runner"], mounts, {"SECRET": "a b=c"}, uid=200007)
    pairs = list(zip(argv, argv[1:], argv[2:]))
    assert ("--ro-bind", str(root / "usr"), "/usr") in pairs and ("--symlink", "usr/bin", "/bin") in pairs
    assert ("--ro-bind", str(root / "etc" / "passwd"), "/etc/passwd") in pairs
    assert ("--ro-bind", str(site), sandbox.LAYER_SITE) in pairs
    assert not any(a == "--ro-bind" and b == "/usr" for a, b, _ in pairs)  # none of the node's system
    assert ("--ro-bind", str(root / "proc"), "/proc") not in pairs
    if Path("/etc/resolv.conf").exists():  # the node's DNS, not the image's
        assert ("--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf") in pairs
    assert ("--ro-bind", str(root / "etc" / "ld.so.preload"), "/etc/ld.so.preload") not in pairs
    assert ("--ro-bind", str(nsswitch), "/etc/nsswitch.conf") in pairs  # the image's would name its libraries
    if os.geteuid() == 0:  # the node's setpriv switches users, through the node's loader; the environment after it
        command = argv[argv.index("--", argv.index("--as-pid-1")) + 1:]
        assert command[:5] == [f"{sandbox.HOST_TOOLS}/ld.so", "--inhibit-cache", "--library-path",
                               f"{sandbox.HOST_TOOLS}/lib", f"{sandbox.HOST_TOOLS}/setpriv"]
        assert "--reuid=200007" in command and "--setenv" not in argv
        assert command[command.index(f"{sandbox.HOST_TOOLS}/env"):] == [
            f"{sandbox.HOST_TOOLS}/env", "-i", "SECRET=a b=c", "/usr/bin/python3", "-m", "tenantserve_runner"]
        # A runner's environment (its owner's secrets) is on no command line: the runner reads it
        # from a descriptor after the switch, and starts again with it.
        runner = sandbox.command(["/usr/bin/python3", "-m", "tenantserve_runner"], mounts,
                                 {"SECRET": "a b=c", "PYTHONPATH": "/tenantserve/site"}, uid=200007, private=True)
        try:
            assert "a b=c" not in " ".join(runner)
            options_fd, env_fd = sandbox.bound_fds(runner)
            assert "a b=c" not in os.pread(options_fd, 1 << 20, 0).decode()
            assert os.pread(env_fd, 1 << 20, 0) == b"SECRET=a b=c\0PYTHONPATH=/tenantserve/site\0"
            assert runner[runner.index(f"{sandbox.HOST_TOOLS}/env"):] == [
                f"{sandbox.HOST_TOOLS}/env", "-i", "PYTHONPATH=/tenantserve/site", f"{ENVIRONMENT_FD_VAR}={env_fd}",
                "/usr/bin/python3", "-m", "tenantserve_runner"]
        finally:
            for fd in sandbox.bound_fds(runner):
                os.close(fd)


def test_a_dockerfile_read_from_a_file_travels_with_the_deploy() -> None:
    """The server has none of the client's files: the text the client read goes with the upload."""
    upload = collect(f"{APPS}/container/from_file.py::FromFile")
    assert list(upload.dockerfiles) == ["Dockerfile"]  # relative to the app's folder: the same key there
    bundle, _ = read_sandboxed(upload, "alice", None, sandboxed=False)
    assert bundle.options.image.dockerfile == (APPS / "container" / "Dockerfile").read_text()


def test_a_gpu_runner_in_an_image_gets_the_nodes_driver_libraries(tmp_path, monkeypatch) -> None:
    """The image brings CUDA's runtime; the driver's libraries are the node's (not run on a GPU here)."""
    library = tmp_path / "libcuda.so.1"
    library.write_bytes(b"")
    monkeypatch.setattr(sandbox, "driver_libraries", lambda: [str(library)])
    root, site, runner = tmp_path / "rootfs", tmp_path / "site", tmp_path / "tenantserve_runner"
    for folder in (root / "usr", site, runner):
        folder.mkdir(parents=True)
    folders = {name: tmp_path / name for name in ("app", "scratch", "data", "sockets")}
    image = sandbox.ImageRoot(root, site, runner, tmp_path / "nsswitch.conf")
    with_gpu = sandbox.command(["python3"], sandbox.Mounts(**folders, image=image, gpus=[0]), {})
    assert ("--ro-bind", str(library), f"{sandbox.LAYER_DRIVER}/libcuda.so.1") in zip(with_gpu, with_gpu[1:],
                                                                                       with_gpu[2:])
    assert str(library) not in sandbox.command(["python3"], sandbox.Mounts(**folders, image=image), {})


def test_container_apps_need_the_runner_sandbox(monkeypatch) -> None:
    monkeypatch.setenv("TENANTSERVE_UNSANDBOXED", "1")
    with pytest.raises(ImageBuildError, match="only in the runner sandbox"):
        ensure(ImageOptions(dockerfile="FROM tenantserve-test-base"), {}, "alice", 1)
