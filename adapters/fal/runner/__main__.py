"""`python -m tenantserve_runner SPEC.json`: serve one fal App on a unix socket.

SPEC (written by the replica) names the app file's text, module and class, and the
socket. setup() runs in the ASGI lifespan before uvicorn binds the socket, so the socket
appearing means the app is ready; a setup() that raises ends the process with its
traceback on stderr. SIGTERM runs teardown() and fal's exit hook.

`python -m tenantserve_runner --spare` is a spare runner (`spare_runner.py`): it imports
fal's SDK and the server, serves one request of its own through fal's app, then waits for
one claim line on stdin (the spec's path, the app's environment, the OS user to become)
before it loads any app code.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from . import ENVIRONMENT_FD_VAR, STACKS_SIGNAL


def _import_fal() -> None:
    """Import fal's SDK without IPython: fal asks at import time whether it runs in Google
    Colab, which imports IPython wherever it is installed (about half a second)."""
    blocked = "IPython" not in sys.modules
    if blocked:
        sys.modules["IPython"] = None  # type: ignore[assignment]
    try:
        import fal  # noqa: F401
        import fal.toolkit  # noqa: F401
    finally:
        if blocked and sys.modules.get("IPython", 0) is None:
            del sys.modules["IPython"]


def _prime_package_list() -> None:
    """fal prints the installed packages before setup(), reading every package's metadata
    (a fifth of a second); read them once, ahead, in the same interpreter."""
    from importlib.metadata import distributions

    import fal.app

    line = ", ".join(f"{dist.metadata['Name']}=={dist.version}" for dist in distributions())
    fal.app._print_python_packages = lambda: print("[debug] Python packages installed:", line)


def _read_claim() -> dict:
    """The claim line, read byte by byte so that nothing after it is taken from stdin."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            os._exit(0)  # the Ray worker that kept this spare is gone
        line += byte
    return json.loads(line)


def _become(claim: dict) -> None:
    """Take the claimed app's environment and, where one is named, its owner's OS user
    (with that, the two capabilities the spare kept for it are gone)."""
    os.environ.clear()
    os.environ.update(claim["env"])
    uid = claim.get("uid")
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


def _exit_with_the_replica() -> None:
    """The replica holds our stdin open and never writes: end of file means it is gone."""

    def watch() -> None:
        while os.read(0, 4096):
            pass
        os._exit(70)

    threading.Thread(target=watch, name="replica-watch", daemon=True).start()


def _quiet(server_class: type) -> type:
    """fal's uvicorn server, waking once a second instead of ten times while idle (200
    idle runners woke a node 2,000 times a second); a signal to stop wakes it at once."""

    class QuietServer(server_class):  # type: ignore[misc, valid-type]
        async def main_loop(self) -> None:
            self._wake, self._loop = asyncio.Event(), asyncio.get_running_loop()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000  # a multiple of 10: the Date header, once a second
                try:
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            wake = getattr(self, "_wake", None)
            if wake is not None:
                self._loop.call_soon_threadsafe(wake.set)

    return QuietServer


def _start_again_with_its_environment() -> None:
    """A runner that switched to its owner's user gets its environment (its owner's secrets
    among it) on a descriptor, not on a command line the node's users can read, and only
    after the switch; it starts again with it, so that the interpreter and its loader see
    all of it from the start, as a process started with it would."""
    fd = os.environ.get(ENVIRONMENT_FD_VAR)
    if fd is None:
        return
    with os.fdopen(int(fd), "rb") as source:
        entries = source.read().decode().split("\0")
    env = dict(entry.split("=", 1) for entry in entries if entry)
    os.execve(sys.executable, [sys.executable, "-m", __package__ or "tenantserve_runner", *sys.argv[1:]], env)


def main() -> None:
    _start_again_with_its_environment()
    # Its threads' stacks into its output when the replica asks (a start that hangs).
    faulthandler.register(STACKS_SIGNAL, file=sys.__stderr__, all_threads=True)
    _import_fal()
    _prime_package_list()
    import uvicorn

    from fal.api.api import FalServer

    from . import distributed, files, logs
    from .app import build, load_class, warm_up

    if sys.argv[1] == "--spare":
        warm_up()
        sys.stdout.write("tenantserve-spare-warm\n")
        sys.stdout.flush()
        claim = _read_claim()
        _become(claim)
        spec_path = claim["spec"]
    else:
        spec_path = sys.argv[1]
    spec = json.loads(Path(spec_path).read_text())
    _exit_with_the_replica()
    logs.install()
    faulthandler.enable(file=sys.__stderr__)
    for folder in reversed(spec.get("sys_path", [])):
        sys.path.insert(0, folder)
    if spec.get("cwd"):  # fal's app_files: relative paths start at the app file's folder
        os.chdir(spec["cwd"])
    files.install()
    app_class = load_class(spec["filename"], spec["source"], spec["module_name"], spec["class_name"])
    distributed.prepare(sys.modules[spec["module_name"]])
    app, asgi = build(app_class)
    config = uvicorn.Config(
        logs.tag_requests(asgi),
        uds=spec["socket"],
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=300,
        ws_max_size=16 * 1024 * 1024,
    )
    server = _quiet(FalServer)(config)
    server.set_handle_exit(app.handle_exit)
    try:
        os.unlink(spec["socket"])
    except FileNotFoundError:
        pass
    server.run()  # on uvloop where it is installed, as uvicorn's own command runs
    if not server.started:
        sys.exit(3)


if __name__ == "__main__":
    main()
