"""The sandbox a runner runs in: bubblewrap, with only what the runner needs mounted.

A runner sees the system's programs and libraries read-only (`/usr`, the interpreter's
prefix, its environment), its app's folder, a private scratch folder at `/tmp` and its
home, its owner's area of the node's model cache at `/data` (fal's persistent folder, where
`download_file` and `download_model_weights` keep their caches), the GPU device files of
its replica, and the socket folder it shares with its replica. Nothing else of the host's
file system exists for it: not the platform's home (registry, secret key, credentials),
Ray's token or session directory, or other runners' folders. It gets its own PID, IPC and
UTS namespaces, so it sees only its own processes; it shares the node's network.

Where the replica runs as root, each owner's runners run as that owner's own OS user
(`TENANTSERVE_RUNNER_UID_BASE` + the owner's number in the registry), with no
capabilities: bubblewrap mounts as root, then `setpriv` drops to the owner's user.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from tenantserve.platform.core import settings

INSTALL_HINT = "install bubblewrap on every node (Debian/Ubuntu: `apt-get install bubblewrap`)"
SOCKETS = "/run/tenantserve"
APP = "/app"

# Read-only system folders; on a merged-/usr system /bin, /lib and friends are links into it.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/opt")
_ETC = ("ssl", "ca-certificates", "ca-certificates.conf", "resolv.conf", "hosts", "nsswitch.conf",
        "localtime", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "mime.types", "gai.conf")
_GPU_SHARED = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


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

    def seen(self) -> "Mounts":
        """The same folders as the runner sees them."""
        if unsandboxed():
            return self
        return Mounts(app=Path(APP), scratch=Path("/tmp"), data=Path("/data"), sockets=Path(SOCKETS),
                      environment=self.environment, gpus=self.gpus)


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
            uid: Optional[int] = None, switches_user: bool = False, network: bool = True) -> list[str]:
    """`argv` inside the sandbox, with exactly `env` as its environment, as OS user `uid`
    (None: the caller's); bubblewrap writes the sandboxed process's pid as JSON to `info_fd`.
    `network=False`: no network at all (reading an app's options needs none).
    `switches_user`: the process becomes its owner's user itself, later (a spare runner),
    keeping only the two capabilities that takes until then."""
    if unsandboxed():
        return ["env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]
    check()
    args = [str(bwrap()), "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--hostname", "runner"]
    if not network or settings.RUNNER_NETWORK.get() == "none":
        args.append("--unshare-net")
    # /tmp first: binds below it (an environment or interpreter under /tmp) go on top of it.
    args += ["--tmpfs", "/", "--bind", str(mounts.scratch), "/tmp", "--proc", "/proc", "--dev", "/dev",
             *_system_binds()]
    prefixes = _interpreter_prefixes()
    args += _parent_folders([*prefixes, *([str(mounts.environment)] if mounts.environment else []),
                             APP, "/data", SOCKETS])
    for prefix in prefixes:
        args += ["--ro-bind", prefix, prefix]
    if mounts.environment is not None:
        args += ["--ro-bind", str(mounts.environment), str(mounts.environment)]
    args += ["--ro-bind", str(mounts.app), APP,
             "--bind", str(mounts.data), "/data",
             "--bind", str(mounts.sockets), SOCKETS,
             *_gpu_binds(mounts.gpus),
             "--remount-ro", "/", "--chdir", "/tmp", "--clearenv", "--as-pid-1"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
        if uid is not None or switches_user:
            # Only what switching users takes; changing to a non-root user clears it.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--", *argv]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    return [*args, "--", *argv]


def child_pid(info_fd: int, fallback: int) -> int:
    """The sandboxed process's pid, from bubblewrap's --info-fd JSON."""
    text = b""
    try:
        while chunk := os.read(info_fd, 4096):
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
