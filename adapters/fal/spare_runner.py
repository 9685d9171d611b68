"""Spare runners: a sandboxed runner with fal's SDK imported, waiting in each Ray worker
(in a slot folder of its own: `app`, `scratch`, `sockets`, `data`) for the app whose
replica that worker becomes. The claim is one line on the spare's stdin (the spec's place,
the app's environment, the owner's OS user, which the spare becomes before any of the
app's code runs). Which replicas use a spare and what it saves: docs/operations.md,
"Cold starts".
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from tenantserve.platform.core import settings
from tenantserve.platform.core.processes import identity

from . import sandbox

logger = logging.getLogger("ray.serve")

RUNNER_MODULE = "tenantserve_runner"
ROOT = Path(tempfile.gettempdir()) / "tenantserve-runners"
UNCLAIMED_BUSY_S = 30.0
# A spare not warm this long after it started (a loaded node, a hung import) is dropped: a
# runner of the replica's own starts.
WARM_WITHIN_S = 60.0
WARM_LINE = b"tenantserve-spare-warm\n"  # the spare's only output before its claim

_MS_BIND, _MS_SHARED, _MNT_DETACH = 4096, 1 << 20, 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount(source: Optional[Path], target: Path, flags: int) -> None:
    if _libc.mount(str(source).encode() if source else None, str(target).encode(), None, flags, None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), str(target))


def _mount_points_under(folder: Path) -> list[str]:
    inside = str(folder) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted({p for p in points if p == str(folder) or p.startswith(inside)}, key=len, reverse=True)


def remove_folder(folder: Path) -> None:
    """Unmount whatever is mounted below `folder` (an owner's model cache, bound there),
    then delete it; a folder that still holds a mount is left as it is, never emptied."""
    for _ in range(8):
        points = _mount_points_under(folder)
        if not points:
            shutil.rmtree(folder, ignore_errors=True)
            return
        for point in points:
            _libc.umount2(point.encode(), _MNT_DETACH)
    logger.error("%s still has mounts (%s); not deleting it", folder, ", ".join(_mount_points_under(folder)))


def worker_folder() -> Path:
    """This Ray worker's runner folder: its spare's, then its replica's, whether the
    replica claimed the spare or started a runner of its own. Named by the worker's pid
    and start time: a later process with its pid is not taken for it."""
    return ROOT / f"worker-{identity(os.getpid()) or os.getpid()}"


def sweep() -> None:
    """Remove the runner folders of workers that are gone without cleaning up (killed)."""
    own = worker_folder()
    for folder in ROOT.glob("worker-*"):
        named = folder.name.removeprefix("worker-")
        pid = named.partition("-")[0]
        if folder != own and (not pid.isdigit() or identity(int(pid)) != named):
            remove_folder(folder)


@dataclass
class Spare:
    """A started spare runner: its slot's folders (host side), its process and the
    sandboxed runner's own pid."""

    folder: Path
    mounts: sandbox.Mounts
    process: subprocess.Popen
    pid: int
    started: float = field(default_factory=time.monotonic)

    def until_warm(self, timeout: float) -> bool:
        """Wait until fal is imported (until then the spare writes in its /tmp as root), at
        most until `timeout` seconds after the spare started: a spare that an idle worker
        has held for longer without getting warm is stuck, and the replica does not wait for
        it. False, and the spare stopped, if it ended or hung: its folder is the replica's
        by now, where the replica starts a runner of its own."""
        assert self.process.stdout is not None
        fd, seen, deadline = self.process.stdout.fileno(), b"", self.started + timeout
        # Raw reads: the spare writes nothing after this line until it is claimed, and the
        # replica's reader takes the pipe over from here.
        while not seen.endswith(WARM_LINE):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                logger.warning("the spare runner %s; starting one for the app",
                               "did not get ready in time" if not ready else "ended before it was ready")
                self.stop()
                return False
            seen += chunk
        if seen != WARM_LINE:
            logger.info("spare runner: %s", seen.removesuffix(WARM_LINE).decode("utf-8", "replace").rstrip())
        return True

    def claim(self, spec: Path, env: Mapping[str, str], uid: Optional[int], data: Path) -> None:
        """Hand the warm spare its app: `data` (the owner's model cache area) bound as its
        /data, then the claim line; `spec` as the runner sees it."""
        assert self.process.stdin is not None
        if not sandbox.unsandboxed():
            _mount(data, self.mounts.data, _MS_BIND)
        self.process.stdin.write(json.dumps({"spec": str(spec), "env": dict(env), "uid": uid}).encode() + b"\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """Kill the sandboxed runner itself (bubblewrap passes no signal on), then bubblewrap."""
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        self.process.kill()
        self.process.wait()

    def discard(self) -> None:
        """Stop the spare and remove its folder: nobody uses either."""
        self.stop()
        remove_folder(self.folder)


_spare: Optional[Spare] = None
_lock = threading.Lock()


def _eligible() -> bool:
    if not settings.SPARE_RUNNERS.value():
        return False
    return sandbox.unsandboxed() or (sandbox.bwrap() is not None and os.geteuid() == 0)


def start() -> None:
    """Start this worker's spare (in the worker's main thread: the sandbox ends with it)."""
    global _spare
    if _spare is not None or not _eligible():
        return
    sweep()
    folder = worker_folder()
    remove_folder(folder)
    mounts = sandbox.Mounts(app=folder / "app", scratch=folder / "scratch", data=folder / "data",
                            sockets=folder / "sockets")
    for path in (mounts.app, mounts.scratch, mounts.data, mounts.sockets):
        path.mkdir(parents=True)
    sandboxed = not sandbox.unsandboxed()
    try:
        if sandboxed:
            _mount(mounts.data, mounts.data, _MS_BIND)
            _mount(None, mounts.data, _MS_SHARED)
        process, info_read = sandbox.spawn(
            lambda info_fd: sandbox.command([sys.executable, "-m", RUNNER_MODULE, "--spare"], mounts,
                                            sandbox.base_env(sys.executable, mounts.seen()), info_fd,
                                            switches_user=True), sandboxed)
    except OSError as error:
        logger.info("no spare runner in this worker: %s", error)
        remove_folder(folder)
        return
    pid = sandbox.child_pid(info_read, process.pid) if info_read is not None else process.pid
    with _lock:
        _spare = Spare(folder, mounts, process, pid)
    threading.Thread(target=_drop_if_unclaimed, args=(_spare,), name="spare-runner", daemon=True).start()


def take() -> Optional[Spare]:
    """This worker's spare runner for its replica, if it has a live one; nobody else gets it."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is not None and spare.process.poll() is not None:
        spare.discard()
        return None
    return spare


def _drop_if_unclaimed(spare: Spare) -> None:
    """A worker that became something other than an app's replica (an actor that has not
    claimed the spare for UNCLAIMED_BUSY_S) gives the spare's memory back."""
    import ray

    busy_since: Optional[float] = None
    while _spare is spare:
        time.sleep(5)
        if not ray.is_initialized():  # not connected (a test's process): asking would start a local Ray
            continue
        try:
            busy = ray.get_runtime_context().get_actor_id() is not None
        except Exception:
            busy = False
        if busy:
            busy_since = busy_since or time.monotonic()
            if time.monotonic() - busy_since > UNCLAIMED_BUSY_S:
                _drop(spare)
                return


def _drop(spare: Spare) -> None:
    """Discard `spare` unless it was taken, holding the lock throughout: a replica that
    asks for it meanwhile waits, and then makes its folders after these are gone, not
    before (they are the same folders)."""
    global _spare
    with _lock:
        if _spare is spare:
            _spare = None
            spare.discard()
