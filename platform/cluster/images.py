"""Container images for apps that set fal's `image=ContainerImage...`, built on each node that runs them.

buildah (Debian's package, with runc) builds the app's Dockerfile on the node: every RUN
step in a user namespace of the owner's own (65536 ids from `TENANTSERVE_BUILD_UID_BASE`),
so a build's root is no user of the node. The built image stays mounted (a buildah
working container) and a runner runs inside that root filesystem, sandboxed as every
runner is (`sandbox.py`), with a platform layer beside it: fal's SDK, at the node's
version, installed by uv for the image's own interpreter, plus the app's `requirements`.
The image needs only a Python fal supports; fal's SDK and the runner are injected.

Both are cached per node, keyed by what went into them (the Dockerfile, its build
arguments and context files, and the owner; the layer by the interpreter it is for and the
packages), so a second deploy of the same Dockerfile builds nothing.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional, Sequence

from tenantserve.adapters.fal.options import ImageOptions
from tenantserve.platform.core import settings
from tenantserve.platform.core.settings import state_dir

from .environments import BuildError, Log, run_builder, uv_pip_install

INSTALL_HINT = "install buildah and runc on every node that runs container apps (Debian/Ubuntu: " \
               "`apt-get install buildah runc`)"
READY = "image.json"
IDS_PER_OWNER = 65536
NODE_STORE = "/var/lib/containers/storage"  # the node's own images (the operator's bases): read by every build
RUN_ROOT = "/run/tenantserve-images"
NOBODY = 65534
NSSWITCH = "".join(f"{database}: files\n" for database in (
    "passwd", "group", "shadow", "gshadow", "networks", "protocols", "services", "ethers", "rpc", "netgroup")) \
    + "hosts: files dns\n"


class ImageBuildError(BuildError):
    """An app's image could not be built or prepared; the message holds the builder's output."""


@dataclass(frozen=True)
class ImageRuntime:
    """A built image as a runner uses it."""

    root: Path  # the image's root filesystem on this node
    site: Path  # the platform's layer: fal's SDK and the app's requirements, for the image's interpreter
    python: str  # the image's interpreter, as the runner sees it
    env: dict[str, str]  # the image's ENV
    workdir: str
    nsswitch: Path  # the name service configuration the sandbox gets instead of the image's


def root() -> Path:
    return settings.IMAGES.get() or state_dir() / "images"


def buildah() -> str:
    found = shutil.which("buildah")
    if found is None:
        raise ImageBuildError(f"this node cannot build container images: {INSTALL_HINT}")
    return found


def check_node() -> None:
    """Raise ImageBuildError, saying what to change, where this node cannot run container apps."""
    if settings.UNSANDBOXED.get():
        raise ImageBuildError(f"container apps run only in the runner sandbox, and this node has "
                              f"{settings.UNSANDBOXED.name} set")
    if os.geteuid() != 0:
        raise ImageBuildError("container apps need the platform's Ray processes to run as root on their nodes: "
                              "buildah builds as root, each build in a user namespace of its owner's")
    buildah()


def key(image: ImageOptions, files: Mapping[str, str], owner: str) -> str:
    identity = {"image": image.model_dump(mode="json"), "files": dict(sorted(files.items())), "owner": owner}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def build_ids(owner_number: Optional[int]) -> int:
    """The first host id of the owner's builds' user namespace."""
    return settings.BUILD_UID_BASE.value() + IDS_PER_OWNER * ((owner_number or 0) + 1)


def registries_conf(registry: str) -> str:
    """containers-registries.conf(5) that sends Docker Hub names, short ones included
    (`python:3.11` is `docker.io/library/python:3.11`), to `registry`, at the same paths, as
    a Docker Hub mirror holds them."""
    insecure = str(registry.startswith("http://")).lower()
    location = registry.removeprefix("http://").removeprefix("https://").rstrip("/")
    return ('unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n\n'
            f'[[registry]]\nprefix = "docker.io"\nlocation = "{location}"\ninsecure = {insecure}\n\n'
            f'[[registry]]\nlocation = "{location}"\ninsecure = {insecure}\n')


def storage_conf(graphroot: Path, runroot: Path) -> str:
    """containers-storage.conf(5) for one owner's images: their own store, with the node's
    (the operator's base images) readable beneath it."""
    shared = f'\n[storage.options]\nadditionalimagestores = ["{NODE_STORE}"]\n' if os.path.isdir(NODE_STORE) else ""
    return f'[storage]\ndriver = "overlay"\ngraphroot = "{graphroot}"\nrunroot = "{runroot}"\n{shared}'


def _builder_env(owner: str) -> dict[str, str]:
    """buildah's environment for `owner`'s images: the owner's own store (no other tenant's
    image is a name or an id there), the operator's registry."""
    env = dict(os.environ)
    store = root() / "stores" / owner
    conf = storage_conf(store / "graph", Path(RUN_ROOT) / owner)
    env["CONTAINERS_STORAGE_CONF"] = _kept(store / "storage.conf", conf)
    registry = settings.IMAGE_REGISTRY.get()
    if registry:
        env["CONTAINERS_REGISTRIES_CONF"] = _kept(root() / "registries.conf", registries_conf(registry))
    return env


def _kept(path: Path, text: str) -> str:
    """`path`, holding `text` (written only where it does not already)."""
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(path)


def _buildah(owner: str, *args: str, log: Optional[Log] = None) -> str:
    """Run buildah on `owner`'s store; its output (passed to `log` line by line as it comes, where given)."""
    command, env = [buildah(), *args], _builder_env(owner)
    if log is None:
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise ImageBuildError(f"buildah {args[0]} failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout
    code, lines = run_builder(command, log, env)
    if code != 0:
        raise ImageBuildError("\n".join(lines[-60:]))
    return "\n".join(lines)


def write_context(folder: Path, image: ImageOptions, files: Mapping[str, str]) -> Path:
    """The build context: the Dockerfile and the files its COPY/ADD lines take ({path: base64})."""
    folder.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        path = PurePosixPath(relative)
        if path.is_absolute() or ".." in path.parts:
            raise ImageBuildError(f"image context: {relative!r} is not a path inside the build context")
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
    dockerfile = folder / ".tenantserve.Dockerfile"
    dockerfile.write_text(image.dockerfile)
    return dockerfile


def _build(image: ImageOptions, files: Mapping[str, str], owner: str, name: str, folder: Path, first_id: int,
           log: Log) -> None:
    dockerfile = write_context(folder / "context", image, files)
    ids = f"0:{first_id}:{IDS_PER_OWNER}"
    args = ["bud", "--isolation", "oci", "--userns-uid-map", ids, "--userns-gid-map", ids, "--layers=false",
            "--force-rm", "-f", str(dockerfile), "-t", name]
    runc = shutil.which("runc")
    if runc is not None:  # crun, buildah's other runtime, cannot run where cgroups are in hybrid mode
        args += ["--runtime", runc]
    if settings.RUNNER_NETWORK.get() == "none":
        args += ["--network", "none"]
    for arg, value in sorted(image.build_args.items()):
        args += ["--build-arg", f"{arg}={value}"]
    try:
        _buildah(owner, *args, str(folder / "context"), log=log)
    except ImageBuildError as error:
        raise ImageBuildError(f"the app's image did not build; buildah's last lines:\n{error}") from None
    finally:
        shutil.rmtree(folder / "context", ignore_errors=True)


def _mounted(owner: str, container: str, name: str) -> Path:
    """The root filesystem of `name`'s working container, created and mounted where it is not."""
    try:
        rootfs = Path(_buildah(owner, "mount", container).strip())
    except ImageBuildError:
        subprocess.run([buildah(), "rm", container], capture_output=True, env=_builder_env(owner))
        _buildah(owner, "from", "--name", container, "--pull-never", name)
        rootfs = Path(_buildah(owner, "mount", container).strip())
    if (rootfs / "etc").is_symlink() or not (rootfs / "etc").is_dir():
        raise ImageBuildError("the image's /etc is not a folder (a link, or missing): runners cannot start in it")
    return rootfs


def _config(owner: str, name: str) -> tuple[dict[str, str], str]:
    """The image's ENV and WORKDIR."""
    config = json.loads(_buildah(owner, "inspect", "--type", "image", name)).get("OCIv1", {}).get("config", {})
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    return env, config.get("WorkingDir") or "/"


def _python_in(rootfs: Path, env: Mapping[str, str]) -> str:
    for folder in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":"):
        for name in ("python3", "python"):
            if folder.startswith("/") and os.path.lexists(rootfs / folder.lstrip("/") / name):
                return f"{folder.rstrip('/')}/{name}"
    raise ImageBuildError("the image has no Python interpreter on its PATH (python3 or python): fal apps need one")


_PROBE = ("import json, platform, sys; print(json.dumps({'version': platform.python_version(), "
          "'libc': platform.libc_ver()}))")


def nsswitch() -> Path:
    """The name service configuration every container app's sandbox gets instead of the
    image's: the C library's own sources only, so that looking up a user (as the node's
    setpriv does, as root, before it switches) loads no library of the image's."""
    return Path(_kept(root() / "nsswitch.conf", NSSWITCH))


def _probe(rootfs: Path, python: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The image's interpreter version and C library, asked of the interpreter inside the
    image, run as nobody in the runners' sandbox (nothing of an image ever runs as root)."""
    import tempfile

    import tenantserve_runner
    from tenantserve.adapters.fal import sandbox

    with tempfile.TemporaryDirectory(prefix="tenantserve-probe-") as scratch:
        folders = {name: Path(scratch) / name for name in ("app", "scratch", "data", "sockets", "site")}
        for folder in folders.values():
            folder.mkdir()
        os.chmod(scratch, 0o755)
        os.chown(folders["scratch"], NOBODY, NOBODY)
        image = sandbox.ImageRoot(rootfs, folders.pop("site"), Path(tenantserve_runner.__file__).parent, nsswitch())
        mounts = sandbox.Mounts(**folders, image=image)
        command = sandbox.command([python, "-I", "-c", _PROBE], mounts, {"PATH": env.get("PATH", "/usr/bin:/bin")},
                                  uid=NOBODY if os.geteuid() == 0 else None, network=False)
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=scratch)
    if done.returncode != 0:
        raise ImageBuildError(f"the image's {python} does not run: {(done.stderr or done.stdout).strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _python_platform(libc: Sequence[str]) -> str:
    """uv's name for the platform the image's interpreter runs on (its wheels' tags)."""
    machine = platform.machine()
    if libc and libc[0] == "glibc":
        major, minor = (int(part) for part in libc[1].split(".")[:2])
        return f"{machine}-manylinux_{major}_{min(minor, 40) if major == 2 else minor}"
    return f"{machine}-unknown-linux-musl"


def _layer(python: dict[str, Any], requirements: Sequence[str], log: Log) -> Path:
    """fal's SDK and `requirements`, installed for the image's interpreter (uv resolves for
    its version and platform: nothing runs inside the image)."""
    from filelock import FileLock

    version = ".".join(python["version"].split(".")[:2])
    packages = [f"fal=={importlib.metadata.version('fal')}", *requirements]
    target_platform = _python_platform(python.get("libc") or [])
    identity = json.dumps({"python": version, "platform": target_platform, "packages": packages}, sort_keys=True)
    folder = root() / "layers" / hashlib.sha256(identity.encode()).hexdigest()[:16]
    if (folder / READY).exists():
        log(f"platform layer: reusing the one on this node ({', '.join(packages)})")
        return folder / "site"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / READY).exists():
            shutil.rmtree(folder, ignore_errors=True)
            log(f"platform layer for Python {version} ({target_platform}): {', '.join(packages)}")
            try:
                uv_pip_install(["--target", str(folder / "site"), "--python-version", version,
                                 "--python-platform", target_platform, *packages], log)
            except BuildError as error:
                shutil.rmtree(folder, ignore_errors=True)
                raise ImageBuildError(f"cannot install fal's SDK and the requirements for the image's Python "
                                      f"{python['version']}:\n{error}") from None
            (folder / READY).write_text(identity)
    return folder / "site"


def ensure(image: ImageOptions, files: Mapping[str, str], owner: str, owner_number: Optional[int],
           requirements: Sequence[str] = (), python_version: Optional[str] = None, log: Log = lambda line: None,
           ) -> ImageRuntime:
    """The app's image on this node, built and mounted first where it is not, and its
    platform layer. Concurrent callers on one node wait for one build; a failed build
    leaves nothing behind and raises ImageBuildError with the builder's output."""
    from filelock import FileLock

    check_node()
    image_key = key(image, files, owner)
    name, container = f"localhost/tenantserve-app:{image_key}", f"tenantserve-app-{image_key}"
    folder = root() / image_key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        ready, rootfs = folder / READY, None
        if ready.exists():
            try:
                rootfs, facts = _mounted(owner, container, name), json.loads(ready.read_text())
                log(f"image {image_key}: reusing the one built on this node")
            except ImageBuildError:  # removed from the node's store since: built again
                ready.unlink()
        if rootfs is None:
            shutil.rmtree(folder, ignore_errors=True)
            log(f"image {image_key}: building with buildah")
            try:
                _build(image, files, owner, name, folder, build_ids(owner_number), log)
                rootfs = _mounted(owner, container, name)
                env, workdir = _config(owner, name)
                python = _python_in(rootfs, env)
                facts = {"python": python, "env": env, "workdir": workdir, **_probe(rootfs, python, env)}
            except BaseException:
                subprocess.run([buildah(), "rm", container], capture_output=True, env=_builder_env(owner))
                shutil.rmtree(folder, ignore_errors=True)
                raise
            folder.mkdir(parents=True, exist_ok=True)
            ready.write_text(json.dumps(facts))
    if python_version and not (facts["version"] + ".").startswith(python_version + "."):
        raise ImageBuildError(f"python_version is {python_version} but the image's {facts['python']} is Python "
                              f"{facts['version']}")
    site = _layer({"version": facts["version"], "libc": facts.get("libc")}, requirements, log)
    return ImageRuntime(root=rootfs, site=site, python=facts["python"], env=facts["env"], workdir=facts["workdir"],
                        nsswitch=nsswitch())


def _prepared(image: ImageOptions, files: Mapping[str, str], owner: str, owner_number: Optional[int],
              requirements: Sequence[str], python_version: Optional[str], log: Log) -> str:
    runtime = ensure(image, files, owner, owner_number, requirements, python_version, log)
    return f"{runtime.python} in the image"


def prepare(image: ImageOptions, files: Mapping[str, str], owner: str, owner_number: Optional[int],
            requirements: Sequence[str], python_version: Optional[str], progress: Log) -> None:
    """Build the app's image on this machine's node, the builder's output streaming to
    `progress`, so that a deploy shows the build and fails on a bad Dockerfile before the
    serving revision is touched. Replicas on other nodes build theirs where they start."""
    from functools import partial

    from .node_builds import run_here

    where = run_here(partial(_prepared, image, files, owner, owner_number, list(requirements), python_version),
                     lambda line: progress(f"  {line}"))
    progress(f"image ready: the runner runs {where}")

