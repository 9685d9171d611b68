"""The replica's side of its runner: start it in its sandbox, watch it, restart it.

A runner that exits on its own (`os._exit`, a segfault, the OOM killer) fails only the
requests it was serving, each told why, and is started again (setup() again) without a
redeploy. A request that outlives `request_timeout` stops the runner the same way: the
work does not go on after its 504.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import aiohttp

from tenantserve_runner import STACKS_SIGNAL

from . import sandbox

logger = logging.getLogger("ray.serve")

APP_SOCKET = "app.sock"
CONTROL_SOCKET = "control.sock"
STOP_GRACE_S = 10.0
OUTPUT_TAIL = 200
OUTPUT_LIMIT = 16 * 1024 * 1024  # the longest line of output kept
RUNNER_URL = "http://runner"


class RunnerExited(RuntimeError):
    """The runner is gone; the message says why, for the requests it was serving."""


class SetupFailed(RuntimeError):
    """The runner ended before it was ready: setup() raised, or the app did not load."""


def describe_exit(code: Optional[int]) -> str:
    """Why a runner ended, from its exit status; bubblewrap reports a signal that killed
    the runner as 128 + the signal's number."""
    if code is None:
        return "the runner stopped answering"
    number = -code if code < 0 else code - 128 if 128 < code < 128 + 65 else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        hint = " (out of memory: the kernel's OOM killer, or the platform stopping it)" if number == signal.SIGKILL else ""
        return f"the app's runner was killed by {name}{hint}"
    return f"the app's runner exited with code {code}"


@dataclass(frozen=True)
class Launch:
    """How to start one runner: its command line (sandbox included) given the descriptor
    bubblewrap reports the runner's own pid on (None: no sandbox), and its socket folder."""

    argv: Callable[[Optional[int]], Sequence[str]]
    sockets: Path
    sandboxed: bool


OnLine = Callable[[Optional[str], str, str], None]


class _Process:
    """A runner's process as the replica's event loop sees it: its lines of output and
    its exit. Made from a `Popen` because a spare runner is started before the replica's
    event loop exists."""

    def __init__(self, popen: subprocess.Popen, pid: int, limit: int) -> None:
        self.popen, self.pid = popen, pid
        self._loop = asyncio.get_running_loop()
        self.stdout = asyncio.StreamReader(limit=limit)
        self._exited: asyncio.Future[int] = self._loop.create_future()

    async def connect(self) -> None:
        await self._loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.stdout), self.popen.stdout)
        threading.Thread(target=self._wait, name=f"runner-{self.pid}", daemon=True).start()

    def _wait(self) -> None:
        code = self.popen.wait()
        try:
            self._loop.call_soon_threadsafe(lambda: self._exited.done() or self._exited.set_result(code))
        except RuntimeError:  # the replica's loop is closed
            pass

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if self.popen.returncode is None:
            self.popen.kill()


def check_listener(connected: socket.socket, runner_pid: int, path: str) -> None:
    """Raise OSError unless the runner's own process listens at the other end of a connected
    unix socket (the kernel's SO_PEERCRED)."""
    pid, _, _ = struct.unpack("3i", connected.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if pid != runner_pid:
        raise OSError(errno.EACCES, f"{path} is not the runner's socket (its listener is pid {pid})")


class _RunnerConnector(aiohttp.UnixConnector):
    """Connections to the runner's socket that the runner itself answers. The socket's folder
    is the runner's to write (it binds there), so it could put a link to any unix socket of
    the node in the socket's place, and the replica (root, where runners switch users) would
    carry the tenant's requests there: a connection whose listener is not the runner's
    process is closed before anything is sent on it."""

    def __init__(self, path: str, runner_pid: Callable[[], int]) -> None:
        super().__init__(path=path, limit=0)
        self._runner_pid = runner_pid

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        protocol = await super()._create_connection(req, traces, timeout)
        try:
            check_listener(protocol.transport.get_extra_info("socket"), self._runner_pid(), self.path)
        except OSError as refused:
            protocol.transport.close()
            raise aiohttp.ClientConnectorError(req.connection_key, refused) from None
        return protocol


def runner_client(socket_path: Path, runner_pid: Callable[[], int]) -> aiohttp.ClientSession:
    """An HTTP client to a runner's unix socket, answered by the process `runner_pid` names
    (call it in a running event loop).

    aiohttp rather than httpx: about a third of the time per call (bench/runner_hop.py).
    Requests reach the app as they came: no header of the client's own, no cookies kept
    between callers, no redirect followed, no timeout (the ingress applies
    request_timeout), bytes passed through undecompressed, and answers' headers as large
    as h11 took them. aiohttp's own second try of an idempotent request after a broken
    connection is off: that request may be what killed the runner (the ingress decides
    what is sent again)."""
    client = aiohttp.ClientSession(
        connector=_RunnerConnector(str(socket_path), runner_pid),
        timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(), max_line_size=16 * 1024, max_field_size=16 * 1024, max_headers=1024,
    )
    if hasattr(client, "_retry_connection"):
        client._retry_connection = False
    return client


def _same_file(a: Path, b: Path) -> bool:
    first, second = os.stat(a), os.stat(b)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


class Runner:
    def __init__(self, launch: Launch, on_line: OnLine, restart_timeout: float = 600) -> None:
        self._launch = launch
        self._restart_timeout = restart_timeout
        self._restarting = asyncio.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._on_line = on_line
        self._process: Optional[_Process] = None
        self._ready: Optional[asyncio.Future[None]] = None
        self._stopping = False
        self._pid = 0
        self._down_since: Optional[float] = None
        self.restarts = 0
        self.last_exit: Optional[str] = None
        self._tail: list[str] = []
        self._client: Optional[aiohttp.ClientSession] = None

    @property
    def client(self) -> aiohttp.ClientSession:
        """The replica's HTTP client to the runner, made in the replica's event loop."""
        if self._client is None:
            self._client = runner_client(self.socket, lambda: self._pid)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    @property
    def socket(self) -> Path:
        return self._launch.sockets / APP_SOCKET

    async def start(self, timeout: float, spare: Optional[tuple[subprocess.Popen, int]] = None) -> None:
        """Start the runner (or take over `spare`, a claimed spare runner's process and
        pid) and wait until setup() is done; SetupFailed with its output if it ends first.

        A claimed spare may have made its socket already (a quick app on a warm spare binds
        within milliseconds of its claim), so only a runner started here has an earlier
        runner's socket removed first; a spare's folder is new, and a runner removes a
        stale socket itself before it binds."""
        self._mark_down()
        self._tail = []
        if spare is None:
            try:
                self.socket.unlink()
            except FileNotFoundError:
                pass
        popen, pid = spare if spare is not None else await self._spawn_process()
        self._process = process = _Process(popen, pid, OUTPUT_LIMIT)
        await process.connect()
        self._pid = pid
        self._spawn(self._read(process))
        deadline = time.monotonic() + timeout
        checked = time.monotonic()
        while not self.socket.exists():
            if process.returncode is not None:
                await asyncio.sleep(0.05)  # the last lines of output
                raise SetupFailed("\n".join(self._tail) or describe_exit(process.returncode))
            if time.monotonic() > checked + 1:
                checked = time.monotonic()
                if self._socket_made_elsewhere():
                    await self.kill()
                    raise SetupFailed("the runner's socket folder was replaced after the runner started: "
                                      "the replica cannot reach it (a runner of a new replica will)")
            if time.monotonic() > deadline:
                await self.kill()
                last = "\n".join(self._tail[-10:])
                raise SetupFailed(f"setup() did not finish within {timeout:g}s (startup_timeout)"
                                  + (f"; its last output:\n{last}" if last else ""))
            await asyncio.sleep(0.01)
        assert self._ready is not None
        self._ready.set_result(None)
        self._spawn(self._watch(process))

    def _socket_place(self) -> Optional[tuple[bool, bool]]:
        """(made, in the replica's folder) for the socket as the runner sees it (through
        its root in /proc); None without a sandbox."""
        if not self._launch.sandboxed:
            return None
        inside = Path(f"/proc/{self._pid}/root{sandbox.SOCKETS}")
        return (inside / APP_SOCKET).exists(), _same_file(inside, self._launch.sockets)

    def _socket_made_elsewhere(self) -> bool:
        """Whether the runner has made its socket in a folder that is no longer the replica's."""
        try:
            place = self._socket_place()
        except OSError:
            return False
        return place is not None and place[0] and not place[1]

    def hang_report(self) -> str:
        """What a runner that is not ready yet is doing, as the node sees it: its state, its
        user (the owner's once a spare has been claimed), its socket; its Python threads'
        stacks follow in its output (the runner dumps them on STACKS_SIGNAL)."""
        pid = self._pid
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except (OSError, ValueError):
            return f"its runner (pid {pid}) is gone"
        facts = [f"runner pid {pid}", f"state {status['State'].strip()}", f"waiting in {wchan or '-'}",
                 f"uid {status['Uid'].split()[0]}"]
        try:
            place = self._socket_place()
            if place is not None:
                facts.append(f"its socket {'made' if place[0] else 'not made'}, "
                             f"in a folder that is {'the' if place[1] else 'NOT the'} replica's")
        except OSError as error:
            facts.append(f"its socket folder: {error}")
        if int(status.get("SigCgt", "0").strip(), 16) & (1 << (STACKS_SIGNAL - 1)):  # else it would end the runner
            self.signal(STACKS_SIGNAL)
            facts.append("its threads' stacks follow")
        return "; ".join(facts)

    async def _spawn_process(self) -> tuple[subprocess.Popen, int]:
        """Start the runner's process (in the event loop's thread, which lives as long as the
        replica: bubblewrap's parent-death signal follows the thread that started it)."""
        popen, info_read = sandbox.spawn(self._launch.argv, self._launch.sandboxed)
        if info_read is None:
            return popen, popen.pid
        return popen, await asyncio.to_thread(sandbox.child_pid, info_read, popen.pid)

    def _mark_down(self) -> None:
        """From now on requests wait for the next start (`ready()`), instead of going to a
        runner that is about to be killed or has exited."""
        if self._ready is None or self._ready.done():
            self._ready = asyncio.get_running_loop().create_future()

    def _spawn(self, work: Any) -> None:
        """Run `work` in the background, holding on to it (asyncio keeps only weak references)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def recycle_soon(self, reason: str) -> None:
        self._mark_down()
        self._spawn(self._recycle(reason))

    async def connect(self) -> socket.socket:
        """A connection to the runner's socket that the runner itself answers (`_RunnerConnector`)."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(connection, str(self.socket))
            check_listener(connection, self._pid, str(self.socket))
        except BaseException:
            connection.close()
            raise
        return connection

    def signal(self, number: int) -> None:
        """Signal the runner itself (bubblewrap passes no signals on)."""
        try:
            os.kill(self._pid, number)
        except ProcessLookupError:
            pass

    async def _read(self, process: _Process) -> None:
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line over the limit: drop it
                continue
            if not raw:
                return
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                record = json.loads(text)
                request, stream, message = record["r"], record["s"], record["m"]
            except (ValueError, KeyError, TypeError):
                request, stream, message = None, "stderr", text
            self._tail = (self._tail + [message])[-OUTPUT_TAIL:]
            self._on_line(request, stream, message)

    async def _watch(self, process: _Process) -> None:
        code = await process.wait()
        if self._stopping or process is not self._process:
            return
        self._mark_down()
        self.last_exit = describe_exit(code)
        logger.error("%s; starting it again", self.last_exit)
        await self._restart()

    async def _restart(self) -> None:
        """Start the runner again, once, whoever asks (a crash and a timeout can meet)."""
        async with self._restarting:
            if self.alive():
                return
            self.restarts += 1
            while not self._stopping:
                try:
                    await self.start(timeout=self._restart_timeout)
                    return
                except SetupFailed as error:
                    logger.error("the runner did not come back: %s", error)
                    await asyncio.sleep(1)

    def down_since(self) -> Optional[float]:
        """When the runner stopped serving (monotonic seconds), or None while it serves."""
        if self.alive():
            self._down_since = None
        elif self._down_since is None:
            self._down_since = time.monotonic()
        return self._down_since

    def alive(self) -> bool:
        """Started, set up, and not exited."""
        process = self._process
        return (process is not None and process.returncode is None
                and self._ready is not None and self._ready.done())

    async def ready(self) -> None:
        if self._ready is not None:
            await asyncio.shield(self._ready)

    def exit_reason(self) -> str:
        process = self._process
        if process is not None and process.returncode is not None:
            return describe_exit(process.returncode)
        return self.last_exit or describe_exit(None)

    async def _recycle(self, reason: str) -> None:
        """Kill the runner (its work cannot be interrupted otherwise) and start it again."""
        self.last_exit = reason
        process = self._process
        self._process = None
        await self._kill(process)
        await self._restart()

    async def kill(self) -> None:
        await self._kill(self._process)

    async def _kill(self, process: Optional[_Process]) -> None:
        """SIGKILL the runner itself (bubblewrap passes no signal on, and a PID namespace's
        first process is spared its parent-death signal), then bubblewrap."""
        if process is None or process.returncode is not None:
            return
        self.signal(signal.SIGKILL)
        process.kill()
        await process.wait()

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM (teardown() and fal's exit hook run), then SIGKILL after `grace` seconds."""
        self._stopping = True
        process = self._process
        try:
            if process is None or process.returncode is not None:
                return
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except asyncio.TimeoutError:
                await self._kill(process)
        finally:
            await self.close()

    async def probe(self, method: str, path: str) -> int:
        """The status of one call to the runner (the app's health check)."""
        async with self.client.request(method, RUNNER_URL + path, allow_redirects=False) as answer:
            await answer.read()
            return answer.status

    def tail(self) -> str:
        return "\n".join(self._tail)
