"""The sandbox a runner runs in: bubblewrap, with only what the runner needs mounted, its
own PID, IPC and UTS namespaces, and (where the replica runs as root) its owner's own OS
user with no capabilities. What a runner sees and cannot reach: docs/tenancy.md, "Threat
model: what a tenant's code can reach".
"""

from __future__ import annotations

import functools
import glob
import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from tenantserve.platform.core import settings
from tenantserve_runner import ENVIRONMENT_FD_VAR

CHILD_PID_WAIT_S = 60.0  # bubblewrap reports its child at once; one silent this long is stuck
INSTALL_HINT = "install bubblewrap on every node (Debian/Ubuntu: `apt-get install bubblewrap`)"
SOCKETS = "/run/tenantserve"
APP = "/app"
# In a container app's sandbox: the platform's layer beside the image (fal's SDK, the runner).
LAYER = "/tenantserve"
LAYER_SITE = f"{LAYER}/site"
LAYER_APP = f"{LAYER}/app"  # the app's files, where an image may have an /app of its own
LAYER_RUNNER = f"{LAYER}/runner"
HOST_TOOLS = f"{LAYER}/node"  # the node's setpriv and env, which switch a container app's runner to its user
LAYER_DRIVER = f"{LAYER}/nvidia"  # the node's NVIDIA driver libraries, for a GPU container app
_DRIVER_LIBRARIES = ("libcuda.so", "libnvidia-", "libnvcuvid.so", "libnvoptix.so")

# Read-only system folders; on a merged-/usr system /bin, /lib and friends are links into it.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/opt")
_ETC = ("ssl", "ca-certificates", "ca-certificates.conf", "resolv.conf", "hosts", "nsswitch.conf",
        "localtime", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "mime.types", "gai.conf")
_GPU_SHARED = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


# What a container app's sandbox takes from the node rather than from its image.
_FROM_NODE = {"proc", "dev", "sys", "tmp", "run", "data", "etc", LAYER.strip("/")}
_ETC_FROM_NODE = ("resolv.conf", "hosts")
# What the node's loader and setpriv would read before the switch: libraries to preload, and
# name services (libraries too); the platform's nsswitch.conf stands in for the image's.
_ETC_NOT_FROM_IMAGE = ("ld.so.preload", "nsswitch.conf")


class SandboxUnavailable(RuntimeError):
    """The node has no bubblewrap and the operator has not turned the sandbox off."""


def unsandboxed() -> bool:
    """The operator's "one trusted team only" switch: runners without a sandbox."""
    return bool(settings.UNSANDBOXED.get())


def bwrap() -> Optional[str]:
    return shutil.which("bwrap")


def check() -> None:
    """Raise SandboxUnavailable, saying how to fix it, if runners cannot be sandboxed here."""
    if not unsandboxed() and bwrap() is None:
        raise SandboxUnavailable(
            f"this node cannot sandbox app runners: {INSTALL_HINT}, or set {settings.UNSANDBOXED.name}=1 "
            "to run tenants' code unsandboxed (one trusted team only)"
        )


def runner_uid(owner_number: Optional[int]) -> Optional[int]:
    """The OS user (and group) an owner's runners run as; None: the replica's own, where
    the node cannot switch users (the replica is not root, or runs runners unsandboxed)."""
    if owner_number is None or unsandboxed() or os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    return settings.RUNNER_UID_BASE.value() + owner_number


@dataclass(frozen=True)
class Mounts:
    """The folders of one runner on the host."""

    app: Path  # the app's files, read-only
    scratch: Path  # the runner's /tmp and home
    data: Path  # the owner's area of the model cache, as /data
    sockets: Path  # shared with the replica, as SOCKETS
    environment: Optional[Path] = None  # the app's virtualenv, read-only
    gpus: Sequence[int] = field(default_factory=tuple)
    # fal's data_mounts: the parts of /data the runner sees (None: all of it).
    data_paths: Optional[Sequence[str]] = None
    image: Optional["ImageRoot"] = None  # a container app's image: the runner's system instead of the node's

    def seen(self) -> "Mounts":
        """The same folders as the runner sees them."""
        if unsandboxed():
            return self
        return Mounts(app=Path(self.app_path), scratch=Path("/tmp"), data=Path("/data"), sockets=Path(SOCKETS),
                      environment=self.environment, gpus=self.gpus, data_paths=self.data_paths, image=self.image)

    @property
    def app_path(self) -> str:
        """Where the runner sees the app's files."""
        return LAYER_APP if self.image is not None else APP

    @property
    def data_folders(self) -> Sequence[str]:
        """The folders of /data the runner sees: all of it, or its data_paths."""
        return ["/data"] if self.data_paths is None else self.data_paths

    def sees_data(self, path: str) -> bool:
        return any(path == folder or path.startswith(folder + "/") for folder in self.data_folders)


@dataclass(frozen=True)
class ImageRoot:
    """A container app's image on the node, and the platform's layer for it."""

    root: Path  # the image's root filesystem
    site: Path  # fal's SDK and the app's requirements, for the image's interpreter
    runner: Path  # the runner package's folder (tenantserve_runner)
    nsswitch: Path  # the platform's name service configuration, in place of the image's

    def pythonpath(self) -> str:
        return f"{LAYER_RUNNER}:{LAYER_SITE}"


class DataMountError(RuntimeError):
    """A folder an app's data_mounts name cannot be bound safely."""


def open_data_folder(data: Path, path: str, uid: Optional[int]) -> int:
    """An open descriptor of `path` (/data/...) in the owner's `data` folder, made where
    missing (given to `uid`), walking it one folder at a time without following links: the
    owner's runners write in `data`, and a link planted there must not take a bind (which
    bubblewrap then makes from the descriptor, `--bind-fd`) out of it."""
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in Path(path).relative_to("/data").parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                if uid is not None:
                    os.chown(part, uid, uid, dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                pass
            try:
                below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as error:
                raise DataMountError(f"data_mounts: {path} is not a folder of /data ({error.strerror})") from None
            os.close(fd)
            fd = below
        return fd
    except BaseException:
        os.close(fd)
        raise


class Command(list[str]):
    """A sandbox's command line and the descriptors it reads (its arguments, data mounts, a
    container runner's environment): its launcher passes them on, then closes them."""

    def __init__(self, argv: Sequence[str], fds: Sequence[int] = ()) -> None:
        super().__init__(argv)
        self.fds = list(fds)


def bound_fds(argv: Sequence[str]) -> list[int]:
    """The descriptors a command from `command()` reads (none for any other)."""
    return list(getattr(argv, "fds", ()))


def _in_memory(entries: Sequence[str], name: str) -> int:
    """A descriptor holding `entries`, each ended by a NUL, off every command line on the node."""
    fd = os.memfd_create(name, 0)
    os.write(fd, "".join(f"{entry}\0" for entry in entries).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def base_env(python: str, seen: Mounts) -> dict[str, str]:
    """What every runner's environment starts from (nothing of the replica's)."""
    return {
        "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(seen.scratch), "TMPDIR": str(seen.scratch), "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
    }


def _interpreter_prefixes() -> list[str]:
    found = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    found.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(p for p in found if not any(p.startswith(s + "/") for s in _SYSTEM))


def _system_binds() -> list[str]:
    args: list[str] = []
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC:
        path = f"/etc/{name}"
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def _image_binds(image: ImageRoot) -> list[str]:
    """The image's root filesystem, read-only, as the runner's system; the node's DNS
    settings; the platform's layer at LAYER."""
    args: list[str] = []
    if (image.root / "etc").is_symlink():  # bubblewrap would follow it out of the image
        raise SandboxUnavailable("the image's /etc is a link: runners cannot start in it")
    for top, below in ((image.root, "/"), (image.root / "etc", "/etc/")):
        skip = _FROM_NODE if below == "/" else {*_ETC_FROM_NODE, *_ETC_NOT_FROM_IMAGE}
        if below == "/etc/":
            args += ["--dir", "/etc"]
        for entry in sorted(os.scandir(top), key=lambda e: e.name) if top.is_dir() else []:
            if entry.name in skip:
                continue
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry.path), below + entry.name]
            elif entry.is_dir() or entry.is_file():
                args += ["--ro-bind", entry.path, below + entry.name]
    for name in _ETC_FROM_NODE:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    args += ["--ro-bind", str(image.nsswitch), "/etc/nsswitch.conf"]
    return [*args, *_parent_folders([LAYER_SITE, f"{LAYER_RUNNER}/{image.runner.name}"]),
            "--ro-bind", str(image.site), LAYER_SITE,
            "--ro-bind", str(image.runner), f"{LAYER_RUNNER}/{image.runner.name}"]


@functools.lru_cache(maxsize=1)
def _switch_tools() -> tuple[tuple[str, str], ...]:
    """(node path, sandbox path) of the node's `setpriv` and `env`, its dynamic loader and
    the libraries they load: the only programs a container app's sandbox runs before it is
    its owner's user, so that nothing of the image (its interpreter, libc, ld.so.preload,
    .pth files) ever runs as root with the two capabilities switching users takes."""
    found: dict[str, str] = {}
    for tool in ("setpriv", "env"):
        path = found[f"{HOST_TOOLS}/{tool}"] = _node_tool(tool)
        for line in subprocess.run(["ldd", path], capture_output=True, text=True, timeout=10).stdout.splitlines():
            words = line.split()
            if len(words) >= 3 and words[1] == "=>" and words[2].startswith("/"):
                found[f"{HOST_TOOLS}/lib/{words[0]}"] = os.path.realpath(words[2])
            elif words and words[0].startswith("/"):
                found[f"{HOST_TOOLS}/ld.so"] = os.path.realpath(words[0])
    return tuple(sorted((node, inside) for inside, node in found.items()))


def _switch_tool_binds() -> list[str]:
    tools = _switch_tools()
    return [*_parent_folders([inside for _, inside in tools]),
            *[arg for node, inside in tools for arg in ("--ro-bind", node, inside)]]


def _switch(uid: int, env: Mapping[str, str], argv: Sequence[str], in_image: bool) -> list[str]:
    """`argv` as user `uid` with `env`, started by the node's setpriv and env with an empty
    environment until the switch: in a container app's sandbox, through the node's own loader
    and libraries (no cache, no preload: the image's /etc is not read); elsewhere the sandbox
    sees the node's system, and they are named by their paths there."""
    if in_image:
        loader = [f"{HOST_TOOLS}/ld.so", "--inhibit-cache", "--library-path", f"{HOST_TOOLS}/lib"]
        setpriv, env_tool = [*loader, f"{HOST_TOOLS}/setpriv"], [*loader, f"{HOST_TOOLS}/env"]
    else:
        setpriv, env_tool = [_node_tool("setpriv")], [_node_tool("env")]
    return [*setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--",
            *env_tool, "-i", *[f"{k}={v}" for k, v in env.items()], *argv]


@functools.lru_cache(maxsize=None)
def _node_tool(name: str) -> str:
    """The node's own `setpriv` (util-linux) or `env` (coreutils), by its real path."""
    found = shutil.which(name, path="/usr/bin:/bin")
    if found is None:
        raise SandboxUnavailable(f"this node has no {name} (util-linux, coreutils) to start runners as their owners")
    return os.path.realpath(found)


def _runner_boot_env(env: Mapping[str, str], fd: int) -> dict[str, str]:
    """What a runner that switches users starts with: enough to find its own module, and the
    descriptor of its whole environment, which it starts again with (`tenantserve_runner`)."""
    return {**({"PYTHONPATH": env["PYTHONPATH"]} if "PYTHONPATH" in env else {}), ENVIRONMENT_FD_VAR: str(fd)}


@functools.lru_cache(maxsize=1)
def driver_libraries() -> tuple[str, ...]:
    """The node's NVIDIA user-space driver libraries (what the NVIDIA container toolkit
    puts in a GPU container): an image has CUDA's runtime, never the node's driver."""
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    found = {}
    for line in listing.splitlines():
        name, _, path = line.strip().partition(" => ")
        name = name.split(" ", 1)[0]
        if name.startswith(_DRIVER_LIBRARIES) and ("x86-64" in line or "AArch64" in line):  # not 32-bit ones
            found.setdefault(name, path)
    return tuple(sorted(found.values()))


def _driver_binds(gpus: Sequence[int]) -> list[str]:
    libraries = driver_libraries() if gpus else ()
    targets = [f"{LAYER_DRIVER}/{os.path.basename(path)}" for path in libraries]
    return [*_parent_folders(targets[:1]),
            *[arg for path, target in zip(libraries, targets) for arg in ("--ro-bind", path, target)]]


def _parent_folders(paths: Sequence[str]) -> list[str]:
    """Every folder above `paths` that the sandbox must create, searchable by all: bubblewrap
    would copy the host's modes, and a folder such as /root (0700) keeps a runner that runs
    as its owner's user out of an interpreter below it."""
    made: set[str] = set()
    args: list[str] = []
    for path in paths:
        for parent in reversed(Path(path).parents):
            name = str(parent)
            if name == "/" or name in made or any(name == s or name.startswith(s + "/") for s in _SYSTEM):
                continue
            made.add(name)
            args += ["--perms", "0755", "--dir", name]
    return args


def _gpu_binds(gpus: Sequence[int]) -> list[str]:
    if not gpus:
        return []
    devices = [d for d in _GPU_SHARED if os.path.exists(d)]
    devices += [f"/dev/nvidia{i}" for i in gpus if os.path.exists(f"/dev/nvidia{i}")]
    devices += [d for d in glob.glob("/dev/dri/renderD*")]
    return [arg for d in devices for arg in ("--dev-bind", d, d)]


def command(argv: Sequence[str], mounts: Mounts, env: Mapping[str, str], info_fd: Optional[int] = None,
            uid: Optional[int] = None, switches_user: bool = False, network: bool = True,
            private: bool = False) -> Command:
    """`argv` inside the sandbox, with exactly `env` as its environment, as OS user `uid`
    (None: the caller's); bubblewrap writes the sandboxed process's pid as JSON to `info_fd`.
    `network=False`: no network at all (reading an app's options needs none).
    `switches_user`: the process becomes its owner's user itself, later (a spare runner),
    keeping only the two capabilities that takes until then. `private`: bubblewrap reads its
    options, the environment (secrets) among them, from a descriptor (`bound_fds`), not from
    its command line, which every user of the node can read; a runner that switches users,
    whose environment is set only after the switch, reads it from another."""
    if unsandboxed():
        return Command(["env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv])
    check()
    switching = os.geteuid() == 0 and uid is not None
    args = [str(bwrap()), "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--hostname", "runner"]
    if not network or settings.RUNNER_NETWORK.get() == "none":
        args.append("--unshare-net")
    # /tmp first: binds below it (an environment or interpreter under /tmp) go on top of it.
    args += ["--tmpfs", "/", "--bind", str(mounts.scratch), "/tmp", "--proc", "/proc", "--dev", "/dev",
             *(_image_binds(mounts.image) + _driver_binds(mounts.gpus) if mounts.image else _system_binds())]
    prefixes = [] if mounts.image else _interpreter_prefixes()
    data = ["--bind", str(mounts.data), "/data"]
    fds: list[int] = []  # what the command reads: the data mounts', a runner's environment, bubblewrap's options
    if mounts.data_paths is not None:  # fal's data_mounts: those folders only, each bound from a safe descriptor
        try:
            for path in mounts.data_paths:
                fds.append(open_data_folder(mounts.data, path, uid))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        data = [arg for fd, path in zip(fds, mounts.data_paths) for arg in ("--bind-fd", str(fd), path)]
    args += _parent_folders([*prefixes, *([str(mounts.environment)] if mounts.environment else []),
                             mounts.app_path, *mounts.data_folders, SOCKETS])
    for prefix in prefixes:
        args += ["--ro-bind", prefix, prefix]
    if mounts.environment is not None:
        args += ["--ro-bind", str(mounts.environment), str(mounts.environment)]
    args += ["--ro-bind", str(mounts.app), mounts.app_path,
             *data,
             "--bind", str(mounts.sockets), SOCKETS,
             *_gpu_binds(mounts.gpus),
             *(_switch_tool_binds() if switching and mounts.image is not None else []),
             "--remount-ro", "/", "--chdir", "/tmp", "--clearenv", "--as-pid-1"]
    if switching:
        # Nothing of the app's environment is in effect until its user is switched: what runs
        # as root, with the two capabilities that takes, is the node's setpriv and env, named by
        # path in an empty environment (a secret named PATH or LD_PRELOAD, or a package's script
        # named setpriv in the app's environment, would otherwise pick what runs as root).
        if private:  # a runner: off the command line of `env`, and of bubblewrap's for as long as it runs
            fds.append(_in_memory([f"{k}={v}" for k, v in env.items()], "tenantserve-runner-env"))
            env = _runner_boot_env(env, fds[-1])
        argv = _switch(uid, env, argv, in_image=mounts.image is not None)
    else:
        for key, value in env.items():
            args += ["--setenv", key, value]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
        if uid is not None or switches_user:
            # Only what switching users takes; changing to a non-root user clears it.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    if private:  # bubblewrap takes only options from a descriptor: the command stays on its command line
        fds.insert(0, _in_memory(args[1:], "tenantserve-sandbox-args"))
        return Command([args[0], "--args", str(fds[0]), "--", *argv], fds)
    return Command([*args, "--", *argv], fds)


def spawn(argv_for: Callable[[Optional[int]], Sequence[str]], sandboxed: bool) -> tuple[subprocess.Popen, Optional[int]]:
    """Start a runner's command, made by `argv_for` given the descriptor bubblewrap reports the
    runner's own pid on (None: no sandbox): its output one pipe, its stdin a pipe its parent
    keeps open (the runner exits when it closes, so a parent that dies, SIGKILL included, takes
    its runner with it). Returns the process and that descriptor's read end, for `child_pid`."""
    info_read, info_write = os.pipe() if sandboxed else (None, None)
    bound: list[int] = []
    try:
        argv = argv_for(info_write)
        bound = bound_fds(argv)
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   pass_fds=(*([info_write] if info_write is not None else []), *bound))
    except BaseException:
        if info_read is not None:
            os.close(info_read)
        raise
    finally:
        for fd in [*([info_write] if info_write is not None else []), *bound]:
            os.close(fd)
    return process, info_read


def child_pid(info_fd: int, fallback: int, timeout: float = CHILD_PID_WAIT_S) -> int:
    """The sandboxed process's pid, from bubblewrap's --info-fd JSON; `fallback` (bubblewrap's
    own) if it ends or says nothing within `timeout`."""
    text, deadline = b"", time.monotonic() + timeout
    try:
        while select.select([info_fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(info_fd, 4096)
            if not chunk:
                break
            text += chunk
            try:
                return int(json.loads(text)["child-pid"])
            except ValueError:
                continue
        return fallback
    except (KeyError, OSError):
        return fallback
    finally:
        os.close(info_fd)
