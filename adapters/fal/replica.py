"""The Ray Serve replica that hosts one fal App: the platform's trusted process in front of
the app's runner.

The replica checks API keys, counts metrics, answers the queue and Python handles, and
owns the lifecycle; the app's code runs only in its runner (`runner/`), a sandboxed
process the replica starts (`supervisor.py`), feeds (`forward.py`) and serves the file
store to (`files_socket.py`). setup() runs when the runner starts, teardown() when Serve
stops the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import logging.handlers
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional

import ray
from ray import serve

import tenantserve_runner
from tenantserve.platform.cluster import environments, images
from tenantserve.platform.core.batching import WriteBatch
from tenantserve.platform.core.bodies import MAX_CALL_BYTES, BodyLimit
from tenantserve.platform.core.outcomes import CallOutcome
from tenantserve.platform.runtime.auth import AuthMiddleware, is_platform_health
from tenantserve.platform.runtime.metrics import AppMetrics
from tenantserve.platform.runtime.storage import AppStorage, FileStore
from tenantserve.platform.store.registry import Registry
from tenantserve.platform.store.request_queue import RequestQueue
from tenantserve.platform.store.secret_box import replica_environment
from tenantserve_runner import control
from tenantserve_runner import files as runner_files
from tenantserve_runner.logs import OUTPUT_LINES_HEADER

from . import sandbox, spare_runner
from .bundle import AppBundle
from .files_socket import FilesSocket
from .forward import Ingress
from .routes import bare_root_as_slash
from .supervisor import APP_SOCKET, CONTROL_SOCKET, STOP_GRACE_S, Launch, Runner, SetupFailed

logger = logging.getLogger("ray.serve")

SETUP_FAILED = "setup() failed in"
STREAMED = ("text/event-stream", "application/jsonl", "application/x-ndjson")
CANCEL_POLL_S = 0.25  # how often a cancellable queued request's replica asks whether it was cancelled
SLOW_START_S = (60.0, 240.0)  # a replica still starting then logs what it is waiting for
OUTPUT_WAIT_S = 0.5  # longest wait for a queued request's lines of output after its answer


class SetupError(RuntimeError):
    """setup() raised; the message holds the traceback from the app's own file down."""


class EndpointError(RuntimeError):
    """A handle call that the endpoint answered with an error status."""

    def __init__(self, status_code: int, detail: Any, where: str) -> None:
        super().__init__(f"{where} answered {status_code}: {detail}")
        self.status_code, self.detail, self.where = status_code, detail, where

    def __reduce__(self) -> tuple[Any, ...]:
        return EndpointError, (self.status_code, self.detail, self.where)


@dataclass
class RequestOutput:
    """A queued request's lines of output, as the replica reads them from the runner's pipe."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0  # every line read for it, blank ones too
    _wanted: Optional[int] = None
    _read_all: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, entry: Optional[dict[str, Any]]) -> None:
        """One line read for the request (None: a blank one, counted, not kept)."""
        self.lines += 1
        if entry is not None:
            self.entries.append(entry)
        if self._wanted is not None and self.lines >= self._wanted:
            self._read_all.set()

    async def complete(self, written: int) -> None:
        """Until the `written` lines the runner reported with the answer are read (they were
        in its pipe before the answer was on its socket): at once, nearly always; at most
        OUTPUT_WAIT_S."""
        if self.lines >= written:
            return
        self._wanted = written
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._read_all.wait(), OUTPUT_WAIT_S)


def user_traceback(output: str, filename: str) -> str:
    """The traceback in a runner's output, from the first frame in the app's own file."""
    start = output.find("Traceback (most recent call last):")
    if start < 0:
        return output.strip()
    lines = output[start:].splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip().startswith(f'File "{filename}"')), 1)
    end = next((i for i, line in enumerate(lines) if "Application startup failed" in line), len(lines))
    return "\n".join([lines[0], *lines[first:end]]).strip()


def _log_entry(message: str, level: str) -> dict[str, Any]:
    return {"message": message, "level": level, "source": "user", "timestamp": datetime.now(timezone.utc).isoformat()}


def _fal_traceback(message: str) -> Optional[str]:
    """fal's runners print an endpoint's traceback as `{"traceback": ...}`, newest frame first."""
    if not message.startswith('{"traceback"'):
        return None
    try:
        text = json.loads(message)["traceback"]
    except (ValueError, KeyError, TypeError):
        return None
    return "".join(re.split(r"(?<=\n)", text)[::-1]).rstrip()


def _flush_serve_logs() -> None:
    for handler in logger.handlers:
        if isinstance(handler, logging.handlers.MemoryHandler) and handler.buffer:
            handler.flush()


async def _flush_logs_every(seconds: float) -> None:
    """Serve's throughput-optimized mode (the HAProxy ingress) buffers a replica's log
    records 1,000 at a time; the app's output reaches the log file (`platform logs`)
    within `seconds` instead."""
    while True:
        await asyncio.sleep(seconds)
        _flush_serve_logs()


def _chown_tree(root: Path, uid: int) -> None:
    """Give `root` and everything below it to `uid` (one stat per entry where it has it already).

    The owner's runners can write below `root` while this runs (another of the owner's replicas
    is serving): the walk holds each folder open and changes entries relative to it, never
    following a link, so a folder swapped for a link to elsewhere on the node is not followed
    (a walk by path names would give that elsewhere to the owner's user)."""
    for _, dirs, files, folder in os.fwalk(root, follow_symlinks=False):
        if os.fstat(folder).st_uid != uid:
            os.fchown(folder, uid, uid)
        for name in (*dirs, *files):
            try:
                if os.lstat(name, dir_fd=folder).st_uid != uid:
                    os.chown(name, uid, uid, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:  # removed by the owner's runner meanwhile
                continue


def _gpu_ids() -> list[int]:
    ids = []
    for value in ray.get_gpu_ids():
        try:
            ids.append(int(value))
        except (TypeError, ValueError):
            continue
    return ids


@serve.ingress()
class FalAppReplica:
    async def __init__(self, bundle_json: str, platform_config: dict[str, Any]) -> None:
        self._stage = "reading the app's bundle"
        watch = asyncio.ensure_future(self._report_slow_start())
        try:
            await self._start(bundle_json, platform_config)
        except BaseException:
            await self._release()  # a replica that fails to start leaves no runner, folder or mount
            raise
        finally:
            watch.cancel()

    async def _report_slow_start(self) -> None:
        """A start that takes long says in the app's logs (and so in a deploy that gives up
        on it) what it is waiting for."""
        began = time.monotonic()
        for after in SLOW_START_S:
            await asyncio.sleep(max(0.0, began + after - time.monotonic()))
            runner = getattr(self, "_runner", None)
            detail = f" ({runner.hang_report()})" if runner is not None and not runner.alive() else ""
            logger.warning("the replica is still starting after %gs: %s%s", after, self._stage, detail)

    async def _start(self, bundle_json: str, platform_config: dict[str, Any]) -> None:
        self._bundle = bundle = AppBundle.from_json(bundle_json)
        # From the start: a long setup()'s prints show in `platform logs` as it runs.
        self._flusher = asyncio.ensure_future(_flush_logs_every(0.5))
        self._stage = "checking the sandbox and reading the registry"
        sandbox.check()
        # One read-only registry connection for the replica: secrets now, API keys per request.
        self._registry = Registry(platform_config["registry_url"], migrate_schema=False)
        self._queue = RequestQueue(self._registry)
        self._starts = WriteBatch(self._queue.mark_started_many)  # the queue's requests arrive together
        owner_number = self._registry.user_number(bundle.owner)
        self._image: Optional[images.ImageRuntime] = None
        self._stage = "preparing the app's image or environment"
        if bundle.options.image is not None:
            self._image = await asyncio.to_thread(
                images.ensure, bundle.options.image, bundle.image_files, bundle.owner, owner_number,
                bundle.options.requirements, bundle.options.python_version, logger.info)
            python = self._image.python
        else:
            python = await asyncio.to_thread(environments.python_for, bundle.options.requirements, logger.info)
        self._stage = "preparing the runner's folders"
        replica_id = serve.get_replica_context().replica_id.unique_id
        gpus = _gpu_ids()
        spare = spare_runner.take()
        if spare is not None and (python != sys.executable or gpus or bundle.options.data_mounts is not None):
            await asyncio.to_thread(spare.discard)  # its interpreter, devices or /data are not this app's
            spare = None
        self._folder = spare_runner.worker_folder()  # the spare's, where it has one
        self._uid = sandbox.runner_uid(owner_number)
        owner_data = Path(platform_config["model_cache"]) / "users" / bundle.owner
        mounts = await asyncio.to_thread(self._mounts, owner_data, python, gpus, spare)  # copies, chowns
        self._callers: dict[str, Optional[str]] = {}
        self._request_logs: dict[str, RequestOutput] = {}
        store = FileStore(platform_config["files_root"], platform_config["files_ttl_s"])
        storage = AppStorage(store, platform_config["public_url"], bundle.owner, bundle.options.app_auth)
        self._files = FilesSocket(storage, self._callers, default_caller=bundle.owner)
        await self._files.start(mounts.sockets / CONTROL_SOCKET)
        seen = mounts.seen()
        spec = {
            "filename": bundle.source.filename, "source": bundle.source.source,
            "module_name": bundle.source.module_name, "class_name": bundle.source.class_name,
            "socket": str(seen.sockets / APP_SOCKET), "sys_path": [str(seen.app / "modules")],
        }
        if bundle.project_files:  # fal's app_files: importable from the project root, worked in from the app's folder
            project = seen.app / "project"
            spec["sys_path"] += [str(project / bundle.project_dir), str(project)]
            spec["cwd"] = str(project / bundle.project_dir)
        elif self._image is not None:  # a container app starts in its image's WORKDIR, as in a container
            spec["cwd"] = self._image.workdir
        (mounts.app / "spec.json").write_text(json.dumps(spec))
        env = self._runner_env(platform_config, python, seen, replica_id)
        warm_within = min(spare_runner.WARM_WITHIN_S, bundle.options.startup_timeout)
        self._stage = "waiting for this worker's spare runner to be warm"
        if spare is not None and not await asyncio.to_thread(spare.until_warm, warm_within):
            spare = None
        if self._uid is not None:  # after a spare is warm: until then it writes in its /tmp as root
            for folder in (mounts.scratch, mounts.sockets):
                os.chown(folder, self._uid, self._uid)
            # The node's other users cannot list either; bubblewrap (root, no capabilities)
            # still enters /tmp before it switches users.
            mounts.scratch.chmod(0o711)
            mounts.sockets.chmod(0o700)
        if spare is not None:
            spare.claim(seen.app / "spec.json", env, self._uid, owner_data)
            logger.info("the app's runner: this worker's spare runner (fal's SDK imported), claimed")
            mounts = dataclasses.replace(mounts, data=spare.mounts.data)  # for restarts: bound there now
        argv = [python, "-m", spare_runner.RUNNER_MODULE, str(seen.app / "spec.json")]
        launch = Launch(partial(sandbox.command, argv, mounts, env, uid=self._uid, private=True), mounts.sockets,
                        sandboxed=not sandbox.unsandboxed())
        self._runner = Runner(launch, self._on_line, restart_timeout=bundle.options.startup_timeout)
        started = time.perf_counter()
        self._stage = "starting the app's runner and waiting for its setup() (its output is above)"
        try:
            await self._runner.start(bundle.options.startup_timeout,
                                     spare=(spare.process, spare.pid) if spare is not None else None)
        except SetupFailed as error:
            raise SetupError(
                f"{SETUP_FAILED} {bundle.source.class_name}:\n{user_traceback(str(error), bundle.source.filename)}"
            ) from None
        self._ingress = Ingress(self._runner, bundle.options.request_timeout, self._callers)
        self._metrics = AppMetrics(bundle.owner, bundle.app_name, replica_id)
        self._metrics.replica_ready(setup_s=time.perf_counter() - started)
        self._gauges = asyncio.ensure_future(self._metrics.keep_gauges_fresh())
        self._ready_at, self._health_misses = time.monotonic(), 0

    def _mounts(self, owner_data: Path, python: str, gpus: list[int],
                spare: Optional[spare_runner.Spare]) -> sandbox.Mounts:
        """This replica's runner folders (a spare's slot, or new ones): its app files,
        scratch and sockets, and the owner's area of the node's model cache (shared by the
        owner's replicas)."""
        if spare is None:
            spare_runner.remove_folder(self._folder)
        app, scratch, sockets = self._folder / "app", self._folder / "scratch", self._folder / "sockets"
        for folder in (app, scratch, sockets, owner_data):
            folder.mkdir(parents=True, exist_ok=True)
        if self._uid is not None:
            _chown_tree(owner_data, self._uid)  # what the operator put there (pre-filled weights) too
        modules_root = self._bundle.unpack_local_modules()
        if modules_root is not None:
            shutil.copytree(modules_root, app / "modules")
        else:
            (app / "modules").mkdir()
        self._bundle.unpack_project(app / "project")
        venv = Path(python).parent.parent
        image = None
        if self._image is not None:
            image = sandbox.ImageRoot(self._image.root, self._image.site, Path(tenantserve_runner.__file__).parent,
                                      self._image.nsswitch)
        return sandbox.Mounts(app=app, scratch=scratch, data=owner_data, sockets=sockets,
                              environment=venv if image is None and (venv / "pyvenv.cfg").exists() else None,
                              gpus=gpus, data_paths=self._bundle.options.data_mounts, image=image)

    def _runner_env(self, config: dict[str, Any], python: str, seen: sandbox.Mounts, replica_id: str) -> dict[str, str]:
        """The runner's whole environment: nothing of the replica's, its owner's secrets."""
        env = {
            **sandbox.base_env(python, seen),
            # Hugging Face's cache in /data where the runner sees it (fal's data_mounts), else in its /tmp.
            "HF_HOME": str((seen.data if seen.sees_data("/data/.cache") else seen.scratch) / ".cache" / "huggingface"),
            "TENANTSERVE_MODEL_CACHE": str(seen.data),
            control.SOCKET_VAR: str(seen.sockets / CONTROL_SOCKET),
            runner_files.FILES_URL_VAR: config["public_url"].rstrip("/") + "/files",
            runner_files.DOWNLOAD_HOSTS_VAR: config.get("download_hosts", ""),
            "TENANTSERVE_NODE_ID": ray.get_runtime_context().get_node_id(),
            "TENANTSERVE_REPLICA_ID": replica_id,
        }
        if self._image is not None and seen.image is not None:  # the image's ENV, the platform's layer first on the path
            env = {**self._image.env, **env, "PATH": self._image.env.get("PATH", env["PATH"]),
                   "PYTHONPATH": ":".join(filter(None, [seen.image.pythonpath(), self._image.env.get("PYTHONPATH")]))}
            if seen.gpus:  # the node's driver, which the image does not have
                env["LD_LIBRARY_PATH"] = ":".join(filter(None, [sandbox.LAYER_DRIVER,
                                                                self._image.env.get("LD_LIBRARY_PATH")]))
        elif (Path(python).parent.parent / "pyvenv.cfg").exists():
            env["VIRTUAL_ENV"] = str(Path(python).parent.parent)
        for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(replica_environment(self._bundle.owner, self._registry, config.get("secret_key_file"),
                                       only=self._bundle.options.secrets))
        return env

    def _on_line(self, request: Optional[str], stream: str, message: str) -> None:
        """One line of the runner's output, into the replica's log (`platform logs`).

        Handed to the log handlers whatever the logger's level: Serve sets the replica
        logger to WARNING while it starts the replica's ASGI app, which is when the
        runner's last lines of setup() output are often read."""
        traceback = _fal_traceback(message)
        level = "ERROR" if traceback else ("INFO" if stream == "stdout" else "STDERR")
        text = traceback or message
        output = self._request_logs.get(request or "")
        if output is not None:
            output.add(_log_entry(text, level) if text.strip() else None)
        logger.handle(logger.makeRecord(
            logger.name, logging.ERROR if traceback else logging.INFO, __file__, 0, text, None, None,
            extra={"request_id": request} if request else None))
        if request is None:
            _flush_serve_logs()  # output outside requests (setup(), threads) is rare: write it now

    @contextlib.contextmanager
    def _logs_of(self, request_id: str) -> Iterator[RequestOutput]:
        output = RequestOutput()
        self._request_logs[request_id] = output
        try:
            yield output
        finally:
            self._request_logs.pop(request_id, None)

    def __serve_build_asgi_app__(self) -> Any:
        limited = BodyLimit(bare_root_as_slash(self._platform_health(self._ingress)), MAX_CALL_BYTES)
        return self._metrics.wrap(AuthMiddleware(limited, self._bundle.owner, self._bundle.options.app_auth, self._registry))

    def _platform_health(self, app: Any) -> Any:
        """`GET /health` is the platform's: whether this replica's runner is serving."""
        version = self._bundle.code_version

        async def asgi(scope: dict, receive: Any, send: Any) -> None:
            if is_platform_health(scope):
                alive = self._runner.alive()
                body = json.dumps({"status": "ok" if alive else "restarting", "version": version}).encode()
                await send({"type": "http.response.start", "status": 200 if alive else 503,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
            await app(scope, receive, send)

        return asgi

    async def check_health(self) -> None:
        """Serve's health check: the runner is serving, or coming back within its startup
        timeout; and the app's own `health_check=` endpoint, where it has one, answers
        within its timeout (`failure_threshold` misses in a row fail the replica)."""
        down_since = self._runner.down_since()
        if down_since is not None and time.monotonic() - down_since > self._bundle.options.startup_timeout:
            raise RuntimeError(f"{self._runner.exit_reason()}, and it has not come back")
        check = self._bundle.options.health_check
        if check is None or down_since is not None or time.monotonic() - self._ready_at < (check.start_period_seconds or 0):
            return
        try:
            healthy = await asyncio.wait_for(self._runner.probe(check.method, check.path),
                                             check.timeout_seconds or 30) < 400
        except Exception:
            healthy = False
        self._health_misses = 0 if healthy else self._health_misses + 1
        if self._health_misses >= (check.failure_threshold or 3):
            raise RuntimeError(f"the app's health check {check.method} {check.path} failed {self._health_misses} times")

    def reconfigure(self, metadata: dict[str, Any]) -> None:
        """Serve hands the app's metadata (its `user_config`) here; nothing to apply."""
        self._metadata = metadata

    async def _post(self, path: str, payload: Any, request_id: str, caller: Optional[str],
                    from_queue: bool = False) -> tuple[int, str, Any, int]:
        """POST a JSON payload to an endpoint: (status, content type, JSON answer or text,
        the lines of output the request had written when it answered).
        `from_queue`: a cancel stops the work (the runner restarts), and a streamed answer
        is cut off at its start (None for its body): the queue keeps whole answers only."""
        status, headers, chunks = await self._ingress.call(
            "POST", path, json.dumps(payload).encode(), [(b"content-type", b"application/json")], request_id, caller,
            from_queue=from_queue)
        found = dict(headers)
        content_type = found.get(b"content-type", b"").decode()
        written = int(found.get(OUTPUT_LINES_HEADER, b"0"))
        if from_queue and content_type.startswith(STREAMED):
            await chunks.aclose()  # the connection to the runner closes: the endpoint's stream stops
            return status, content_type, None, written
        data = b"".join([chunk async for chunk in chunks])
        if content_type.startswith("application/json"):
            try:
                return status, content_type, json.loads(data), written
            except ValueError:
                pass
        return status, content_type, data.decode("utf-8", "replace"), written

    async def call_endpoint(self, name: str, payload: Any = None) -> Any:
        """A Python handle's call: the endpoint method `name` with a JSON payload; its JSON
        answer (the output model as a dict), as the owner (the handle caller is inside the
        cluster, where the owner's deployments live)."""
        path = self._bundle.endpoints.get(name)
        if path is None:
            raise AttributeError(
                f"{self._bundle.owner}/{self._bundle.app_name} has no endpoint method {name!r} "
                f"(it has: {', '.join(sorted(self._bundle.endpoints))})"
            )
        request_id = os.urandom(12).hex()
        status, _, body, _ = await self._post(path, payload if payload is not None else {}, request_id,
                                              self._bundle.owner)
        if status >= 400:
            detail = body.get("detail", body) if isinstance(body, dict) else body
            raise EndpointError(status, detail, f"{self._bundle.owner}/{self._bundle.app_name}.{name}")
        return body

    async def call_path(self, path: str, payload: Any, request_id: str, caller: Optional[str] = None,
                        dispatcher: Optional[str] = None) -> CallOutcome:
        """A request from the queue: the endpoint at `path` answers `payload` as its HTTP
        route would, with what the endpoint printed meanwhile; `caller` is the user who
        submitted it (None: anonymous, to a public app), whose rights its file inputs get.
        It is recorded as started (IN_PROGRESS for fal's clients) as it reaches this replica,
        and not run if its caller cancelled it before, or if `dispatcher` (the one that sent
        it) lost its claim meanwhile (another runs it). A cancel of the running request
        reaches the app as fal's does, as a POST to the endpoint's `/cancel` sibling, where
        it has one; without one the request finishes."""
        started = time.perf_counter()
        try:
            if not await self._starts((request_id, dispatcher)):
                return CallOutcome.failed(499, "Request cancelled", request_id)
        except Exception as error:  # a busy registry costs the start time, not the request
            logger.warning("request %s: recording its start failed (%s); running it", request_id, error)
        cancel_path = path.rstrip("/") + "/cancel"
        relay = (asyncio.get_running_loop().create_task(self._relay_cancel(cancel_path, request_id, caller))
                 if cancel_path in self._bundle.endpoints.values() else None)
        try:
            with self._logs_of(request_id) as output:
                status, content_type, body, written = await self._post(path, payload, request_id, caller,
                                                                       from_queue=True)
                await output.complete(written)
        finally:
            if relay is not None:
                relay.cancel()
        if content_type.startswith(STREAMED):
            status, body = 422, {"detail": f"{path} streams its answer: call it directly, not through the queue"}
        elif not isinstance(body, (dict, list)) and status >= 400:
            body = {"detail": body}
        self._metrics.answered(status, time.perf_counter() - started)
        return CallOutcome(status, body, output.entries)

    async def _relay_cancel(self, cancel_path: str, request_id: str, caller: Optional[str]) -> None:
        """Wait for the request's caller to cancel it in the queue, then tell the app."""
        while True:
            try:
                if await asyncio.to_thread(self._queue.cancel_requested, request_id):
                    break
            except Exception as error:  # a busy registry: ask again
                logger.warning("request %s: reading whether it was cancelled failed (%s)", request_id, error)
            await asyncio.sleep(CANCEL_POLL_S)
        logger.info("request %s: cancel requested; calling %s", request_id, cancel_path)
        await self._post(cancel_path, {}, request_id, caller)
        self._callers[request_id] = caller  # the request runs on: its file inputs keep its caller's rights

    async def __del__(self) -> None:
        await self._release()

    async def _release(self) -> None:
        """Stop what the replica started, as far as it got: teardown() runs in the runner."""
        runner = getattr(self, "_runner", None)
        if hasattr(self, "_flusher"):
            self._flusher.cancel()
        if hasattr(self, "_gauges"):
            self._gauges.cancel()
        if hasattr(self, "_metrics"):
            self._metrics.replica_stopped()
        if runner is not None:
            await runner.stop(self._bundle.options.termination_grace_period_seconds or STOP_GRACE_S)
        if hasattr(self, "_files"):
            await self._files.stop()
        if hasattr(self, "_folder"):
            spare_runner.remove_folder(self._folder)
