"""The Serve app at `/queue`: fal's queue API over the durable request queue, and the one
dispatcher that feeds queued requests to the apps through Serve handles.

Its routes (submit, status, its SSE stream, result, cancel): docs/http-api.md.

Each app gets at most `max_concurrency` x `max_multiplexing` requests at a time from the
queue, oldest first; apps do not share that budget, so one tenant's flood never holds
back another tenant's app. Dispatchers (one per replica, `TENANTSERVE_QUEUE_DISPATCHERS`) share the
queue through the registry: each claims under a lease it renews, so the requests of one
that stops go back in line (they are rows, not tasks in memory); on PostgreSQL they hear
each other's new requests (LISTEN/NOTIFY) instead of waiting for their next look.

No `from __future__ import annotations`: Serve's class-based ingress would turn string
annotations into query parameters.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Optional

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve import RunTarget
from ray.serve.exceptions import RequestCancelledError
from sqlalchemy.exc import OperationalError

from tenantserve.adapters.fal.bundle import AppBundle
from tenantserve.platform.cluster import ray_private
from tenantserve.platform.core.batching import WriteBatch
from tenantserve.platform.core.bodies import MAX_QUEUE_BYTES, BodyError, declared_length, parse_json, read_limited
from tenantserve.platform.core.naming import QUEUE_APP, QUEUE_DEPLOYMENT, serve_app_name
from tenantserve.platform.core.outcomes import Admission, CallOutcome, RunnerLost
from tenantserve.platform.runtime.auth import KeyCache, refusal
from tenantserve.platform.runtime.busy import registry_busy
from tenantserve.platform.store.registry import Registry
from tenantserve.platform.store.request_queue import (
    CANCELLED,
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    LEASE_S,
    START_TIMEOUT,
    QueuedRequest,
    RequestQueue,
    Submission,
)

logger = logging.getLogger("ray.serve")

APP_NAME = QUEUE_APP
DEPLOYMENT_NAME = QUEUE_DEPLOYMENT
ROUTE = "/queue"
RESULTS_TTL_S = 7 * 24 * 3600.0
WEBHOOK_DELAYS_S = (0, 1, 2, 4, 8)  # five tries, then the webhook is given up on
CANCELLED_STATUS = 499
REGISTERED_CACHE_S = 5.0  # how long an app's registered bundle is trusted: `apps scale` applies soon
MAX_PATH = 500  # the registry's column holds 512
APP_CHECK_S = 2.0
RECORD_RETRY_S = (0.1, 2.0)  # first and longest wait between tries to record an outcome
STATUS_POLL_S = 0.2  # how often a status stream reads a request another dispatcher runs
EXPIRY_EVERY_S = 0.5  # how often start deadlines (X-Fal-Request-Timeout) are checked
# How often the dispatcher reads which apps have queued requests; in between it knows the
# ones it was given and the ones whose line it has not emptied.
SCAN_EVERY_S = 0.5
HEARD_SCAN_S = 0.02  # a burst of notifications from other dispatchers makes one scan per this many seconds
WRITE_BATCH = 64  # most writes in one transaction: a flood's batch holds back another tenant's write this long
RECENT_S = 60.0  # how long a request this dispatcher finished is answered from its memory
RECENT_BYTES = 64 * 1024 * 1024  # most stored bytes of results kept in that memory
DRAIN_S = 120.0  # how long a dispatcher being replaced sees its running requests through

api = FastAPI(title="tenantserve queue")
api.add_exception_handler(OperationalError, registry_busy)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _is_http_url(url: str) -> bool:
    try:
        parsed = httpx.URL(url)
    except Exception:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def _wants_logs(request: Request) -> bool:
    return request.query_params.get("logs", "0").lower() not in ("0", "false", "")


def _error_text(request: QueuedRequest) -> Optional[str]:
    """What went wrong with a finished request, as fal's status and webhook report it."""
    if request.status == CANCELLED:
        return "Request cancelled"
    if (request.status_code or 200) < 400:
        return None
    if isinstance(request.result, dict):
        return str(request.result.get("detail", request.result))
    return str(request.result)


class RecentlyFinished:
    """The requests this dispatcher finished lately, as recorded: a finished request does
    not change, so its status and result are read from here, not the registry, for
    `keep_s` and up to RECENT_BYTES of results (a larger one is read from the registry)."""

    def __init__(self, keep_s: float) -> None:
        self._keep_s = keep_s
        self._kept: OrderedDict[str, tuple[float, QueuedRequest]] = OrderedDict()
        self._bytes = 0

    def add(self, request: QueuedRequest) -> None:
        if request.stored_bytes > RECENT_BYTES // 16:
            return
        request = dataclasses.replace(request, payload=None)  # status and result never read it; it is up to 16 MB
        earlier = self._kept.pop(request.id, None)
        if earlier is not None:
            self._bytes -= earlier[1].stored_bytes
        self._kept[request.id] = (time.monotonic() + self._keep_s, request)
        self._bytes += request.stored_bytes
        now = time.monotonic()
        while self._kept:
            expires, oldest = next(iter(self._kept.values()))
            if expires > now and self._bytes <= RECENT_BYTES:
                break
            self._kept.popitem(last=False)
            self._bytes -= oldest.stored_bytes

    def get(self, request_id: str) -> Optional[QueuedRequest]:
        kept = self._kept.get(request_id)
        return kept[1] if kept is not None and kept[0] > time.monotonic() else None


def _slots(bundle: AppBundle) -> int:
    """How many of the app's requests may run at once."""
    return bundle.options.max_concurrency * bundle.options.max_multiplexing


@serve.ingress(api)
class QueueServer:
    async def __init__(self, config: dict[str, Any]) -> None:
        self.registry = Registry(config["registry_url"], migrate_schema=False)
        self.queue = RequestQueue(self.registry)
        self.submits = WriteBatch(self.queue.submit_many, max_items=WRITE_BATCH)
        self.finishes = WriteBatch(self.queue.finish_many, max_items=WRITE_BATCH)
        self.watchers: dict[str, set[asyncio.Event]] = {}  # request id -> its status streams
        self.keys = KeyCache(self.registry)
        self.public_url = config["public_url"].rstrip("/") + ROUTE
        self.results_ttl_s = config.get("results_ttl_s", RESULTS_TTL_S)
        self.recent = RecentlyFinished(keep_s=min(RECENT_S, self.results_ttl_s))
        self.running: dict[str, Any] = {}  # request id -> its DeploymentResponse
        self.claimed: set[str] = set()  # the requests this dispatcher runs: the ones whose lease it renews
        self.handles: dict[str, Any] = {}
        self.stopping = False
        self.per_app: dict[tuple[str, str], int] = {}
        self.bundles: dict[tuple[str, str], tuple[float, Any]] = {}
        self.wakeup = asyncio.Event()
        self._next_expiry = 0.0
        self._next_scan = 0.0
        self.waiting: dict[tuple[str, str], None] = {}  # apps with queued requests, as far as this dispatcher knows
        loop = asyncio.get_running_loop()
        self._stop_listening = threading.Event()
        threading.Thread(target=self.queue.listen, args=(lambda: loop.call_soon_threadsafe(self._heard), self._stop_listening),
                         name="queue-listen", daemon=True).start()
        self._tasks = [loop.create_task(self._dispatch_forever()), loop.create_task(self._housekeeping_forever()),
                       loop.create_task(self._leases_forever())]
        for request in await asyncio.to_thread(self.queue.pending_webhooks):
            loop.create_task(self._deliver_webhook(request))

    # the HTTP API

    def _urls(self, owner: str, app: str, request_id: str) -> dict[str, str]:
        base = f"{self.public_url}/{owner}/{app}/requests/{request_id}"
        return {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}

    async def _own_request(self, owner: str, app: str, request_id: str, request: Request) -> Any:
        """The request if the caller may see it (its submitter; anyone for an anonymous
        submit to a public app), else a 404 that says nothing about other users' requests."""
        found = await self._read(request_id)
        if found is None or (found.owner, found.app) != (owner, app):
            return _error(404, f"Request {request_id} not found")
        if found.caller is not None and await self.keys.caller(request.headers.get("authorization")) != found.caller:
            return _error(404, f"Request {request_id} not found")
        return found

    async def _read(self, request_id: str) -> Optional[QueuedRequest]:
        return self.recent.get(request_id) or await asyncio.to_thread(self.queue.get, request_id)

    async def _status(self, found: QueuedRequest, with_logs: bool) -> dict[str, Any]:
        reported = found.reported_status
        status: dict[str, Any] = {"status": reported, "request_id": found.id,
                                  **self._urls(found.owner, found.app, found.id)}
        if reported == IN_QUEUE:
            status["queue_position"] = await asyncio.to_thread(self.queue.position, found)
        if reported in (IN_PROGRESS, COMPLETED, CANCELLED):
            status["logs"] = found.logs if with_logs else None
        if found.status in (COMPLETED, CANCELLED):
            status["status"] = COMPLETED  # fal reports a cancelled request as completed, with an error
            elapsed = (found.finished_at or 0) - (found.started_at or found.finished_at or 0)
            status["metrics"] = {"inference_time": elapsed} if found.started_at else {}
            error = _error_text(found)
            if error is not None:
                status["error"] = error
        return status

    @api.post("/{owner}/{app}")
    @api.post("/{owner}/{app}/{path:path}")
    async def submit(self, owner: str, app: str, request: Request, path: str = "") -> Response:
        bundle = await self._registered(owner, app)
        if bundle is None:
            return _error(404, f"No app {owner}/{app}")
        caller = await self.keys.caller(request.headers.get("authorization"))
        refused = refusal(bundle.options.app_auth, owner, caller)
        if refused is not None:
            return _error(*refused)
        try:
            body = await read_limited(request.stream(), MAX_QUEUE_BYTES, declared_length(request.headers))
            payload = parse_json(body) if body else None
        except BodyError as error:
            return error.response()
        timeout = request.headers.get("x-fal-request-timeout")  # fal's start deadline
        try:
            timeout_s = float(timeout) if timeout else None
        except ValueError:
            return _error(422, "X-Fal-Request-Timeout must be a number of seconds")
        if timeout_s is None and caller == owner:  # fal's request_start_timeout: the owner's default
            timeout_s = bundle.options.request_start_timeout or None
        webhook = request.query_params.get("fal_webhook")
        if webhook is not None and not _is_http_url(webhook):
            return _error(422, "fal_webhook must be an http(s) URL")
        if len(path) > MAX_PATH:
            return _error(404, "Path not found")
        no_retry = request.headers.get("x-fal-no-retry", "").lower() in ("1", "true", "yes")
        key = (owner, app)
        claim = not self.stopping and key not in self.waiting and self.per_app.get(key, 0) < _slots(bundle)
        if claim:  # a free slot and, as far as this dispatcher knows, nobody in line: straight to the app
            self.per_app[key] = self.per_app.get(key, 0) + 1
        written = asyncio.ensure_future(self.submits(Submission(
            owner, app, "/" + path, payload, caller, timeout_s=timeout_s, webhook_url=webhook,
            max_attempts=1 if no_retry else bundle.options.queue_attempts, claim=claim,
        )))
        # A caller that goes away meanwhile does not take the request with it: once written, it runs.
        written.add_done_callback(lambda done: self._placed(done, key, claim))
        queued, position = await asyncio.shield(written)
        return JSONResponse({"request_id": queued.id, **self._urls(owner, app, queued.id), "queue_position": position})

    def _placed(self, written: "asyncio.Future[tuple[QueuedRequest, int]]", key: tuple[str, str], claim: bool) -> None:
        """A submit's row is written (or not): a request claimed with it starts; one that
        went in line gives back the slot it did not take, and the dispatcher looks."""
        queued = None if written.cancelled() or written.exception() is not None else written.result()[0]
        if queued is not None and queued.status == IN_PROGRESS:
            self._start(queued, known=True)
            return
        if claim:
            self.per_app[key] -= 1
        if queued is not None:
            self.waiting[key] = None
            self.wakeup.set()

    @api.get("/{owner}/{app}/requests/{request_id}/status")
    @api.get("/{owner}/{app}/requests/{request_id}/status/")  # fal's SDK client adds the slash
    async def status(self, owner: str, app: str, request_id: str, request: Request) -> Response:
        found = await self._own_request(owner, app, request_id, request)
        if isinstance(found, Response):
            return found
        status = await self._status(found, _wants_logs(request) and await self._logs_shown(found))
        return JSONResponse(status, status_code=200 if found.status in (COMPLETED, CANCELLED) else 202)

    @api.get("/{owner}/{app}/requests/{request_id}/status/stream")
    @api.get("/{owner}/{app}/requests/{request_id}/status/stream/")
    async def status_stream(self, owner: str, app: str, request_id: str, request: Request) -> Response:
        found = await self._own_request(owner, app, request_id, request)
        if isinstance(found, Response):
            return found
        with_logs = _wants_logs(request) and await self._logs_shown(found)

        async def events() -> Any:
            last = None
            current: Optional[QueuedRequest] = found
            changed = asyncio.Event()
            self.watchers.setdefault(request_id, set()).add(changed)
            try:
                while current is not None:
                    status = await self._status(current, with_logs)
                    if status != last:
                        yield f"data: {json.dumps(status)}\n\n"
                        last = status
                    if current.status in (COMPLETED, CANCELLED):
                        return
                    with contextlib.suppress(asyncio.TimeoutError):  # another dispatcher's: read it again
                        await asyncio.wait_for(changed.wait(), STATUS_POLL_S)
                    changed.clear()
                    current = await self._read(request_id)
            finally:
                watching = self.watchers.get(request_id, set())
                watching.discard(changed)
                if not watching:
                    self.watchers.pop(request_id, None)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _logs_shown(self, found: QueuedRequest) -> bool:
        """An app with fal's `private_logs` shows its requests' logs to its owner only."""
        bundle = await self._registered(found.owner, found.app)
        return bundle is None or not bundle.options.private_logs or found.caller == found.owner

    def _changed(self, request_id: str) -> None:
        """Wake the status streams of a request whose state this dispatcher just recorded."""
        for event in self.watchers.get(request_id, ()):
            event.set()

    @api.get("/{owner}/{app}/requests/{request_id}")
    @api.get("/{owner}/{app}/requests/{request_id}/")
    async def result(self, owner: str, app: str, request_id: str, request: Request) -> Response:
        found = await self._own_request(owner, app, request_id, request)
        if isinstance(found, Response):
            return found
        if found.status == CANCELLED:
            return _error(CANCELLED_STATUS, "Request cancelled")
        if found.status != COMPLETED:
            return _error(400, f"Request is still {'in queue' if found.reported_status == IN_QUEUE else 'in progress'}")
        headers = {"x-fal-request-id": found.id}
        if isinstance(found.result, dict) and found.result.get("error_type") == START_TIMEOUT:
            headers["x-fal-request-timeout-type"] = "user"
        return JSONResponse(found.result, status_code=found.status_code or 200, headers=headers)

    @api.put("/{owner}/{app}/requests/{request_id}/cancel")
    @api.put("/{owner}/{app}/requests/{request_id}/cancel/")
    async def cancel(self, owner: str, app: str, request_id: str, request: Request) -> Response:
        found = await self._own_request(owner, app, request_id, request)
        if isinstance(found, Response):
            return found
        requested = JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
        for _ in range(3):  # a request can move between the checks (put back in line when its replica died)
            # Queued, or claimed with no replica started on it (the replica's start refuses it
            # then): it never runs, and ends with 499.
            if (await asyncio.to_thread(self.queue.cancel_queued, request_id)
                    or await asyncio.to_thread(self.queue.cancel_unstarted, request_id)):
                self._drop_call(request_id)
                await self._ended(request_id)
                return requested
            if await asyncio.to_thread(self.queue.request_cancel, request_id):
                return requested  # its replica tells the app, if the app can stop it; else it finishes (fal's rule)
            current = await asyncio.to_thread(self.queue.get, request_id)
            if current is None or current.status in (COMPLETED, CANCELLED):
                break
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)

    # the proxy's gate (proxy_gate.py)

    async def admit(self, owner: str, app: str, authorization: str, health: bool) -> Optional[Admission]:
        """Serve's proxy asks this before a request wakes a replica of an app at zero.
        None: let it wake the app, and ask again next time (an app not registered yet)."""
        bundle = await self._registered(owner, app)
        if bundle is None:  # being deployed for the first time, or `platform run`'s: the app decides
            return None
        if health:
            return Admission.answer(200, {"status": "ok", "version": bundle.code_version})
        refused = refusal(bundle.options.app_auth, owner, await self.keys.caller(authorization))
        return Admission.let_through() if refused is None else Admission.answer(refused[0], {"detail": refused[1]})

    async def _registered(self, owner: str, app: str) -> Any:
        cached = self.bundles.get((owner, app))
        if cached and cached[0] > time.monotonic():
            return cached[1]
        bundle = AppBundle.registered(await asyncio.to_thread(self.registry.get, owner, app))
        if bundle is not None:  # an app not registered yet may be in its first deploy: ask again next time
            self.bundles[(owner, app)] = (time.monotonic() + REGISTERED_CACHE_S, bundle)
        return bundle

    # the dispatcher

    async def __del__(self) -> None:
        """Serve is stopping this dispatcher (an update or a shutdown): start nothing more, so
        that a new dispatcher alone takes the queue from here, and see the requests it runs
        to their end (their leases renewed meanwhile), for up to the deployment's graceful
        shutdown timeout: a request whose lease lapsed while its run went on would run a
        second time, beside it, under the next dispatcher."""
        self.stopping = True
        self._stop_listening.set()
        while self.claimed:
            await asyncio.sleep(0.1)

    def _heard(self) -> None:
        """Another dispatcher (or this one) queued a request or put one back: look soon."""
        self._next_scan = min(self._next_scan, time.monotonic() + HEARD_SCAN_S)
        self.wakeup.set()

    async def _dispatch_forever(self) -> None:
        while not self.stopping:
            try:
                await self._dispatch()
            except Exception:
                logger.exception("queue dispatch failed; trying again")
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()

    async def _capacity(self, owner: str, app: str) -> Optional[int]:
        """How many of the app's requests may run at once (None: no such app); read from
        the registry at most every few seconds, so `apps scale` applies soon."""
        bundle = await self._registered(owner, app)
        return _slots(bundle) if bundle else None

    async def _dispatch(self) -> None:
        if self.stopping:
            return
        if time.monotonic() >= self._next_expiry:
            self._next_expiry = time.monotonic() + EXPIRY_EVERY_S
            await self._expire_unstarted()
        if time.monotonic() >= self._next_scan:  # what other dispatchers queued or put back
            self._next_scan = time.monotonic() + SCAN_EVERY_S
            self.waiting = dict.fromkeys(await asyncio.to_thread(self.queue.waiting_apps))
        for owner, app in list(self.waiting):
            capacity = await self._capacity(owner, app)
            free = (capacity or 1) - self.per_app.get((owner, app), 0)
            if free <= 0:
                continue
            claimed = await asyncio.to_thread(self.queue.claim, owner, app, free)
            if len(claimed) < free:  # the app's line is empty
                self.waiting.pop((owner, app), None)
            for started in claimed:
                self.per_app[(owner, app)] = self.per_app.get((owner, app), 0) + 1
                self._changed(started.id)
                self._start(started, known=capacity is not None)

    async def _expire_unstarted(self) -> None:
        for request_id in await asyncio.to_thread(self.queue.expire_unstarted):
            self._drop_call(request_id)
            await self._ended(request_id)

    def _drop_call(self, request_id: str) -> None:
        """Stop waiting for a replica to take a request this dispatcher no longer runs (its
        caller cancelled it, or its start deadline passed, before one did): its app's slot
        frees now, not once a replica appears (the replica would refuse it anyway)."""
        response = self.running.get(request_id)
        if response is not None:
            response.cancel()

    async def _ended(self, request_id: str) -> None:
        """A request this dispatcher ended outside its run (a start deadline, a cancel, a
        lapsed lease): its status streams hear of it, its webhook goes out."""
        self._changed(request_id)
        ended = await asyncio.to_thread(self.queue.get, request_id)
        if ended is not None and ended.webhook_url:
            asyncio.get_running_loop().create_task(self._deliver_webhook(ended))

    def _start(self, request: QueuedRequest, known: bool) -> None:
        """Run a request this dispatcher claimed (its slot is already counted)."""
        self.claimed.add(request.id)
        asyncio.get_running_loop().create_task(self._run(request, known))

    async def _run(self, request: QueuedRequest, known: bool) -> None:
        key = (request.owner, request.app)
        freed = False

        def free() -> None:
            nonlocal freed
            if not freed:
                freed = True
                self.per_app[key] -= 1
                self.wakeup.set()

        try:
            if not known:
                outcome = CallOutcome.failed(404, f"No app {request.owner}/{request.app}")
            else:
                outcome = await self._call(request)
            if outcome is None:  # the replica died: back in line
                if await self._until_recorded(request.id, lambda: asyncio.to_thread(self.queue.requeue, request.id)):
                    await self._ended(request.id)  # cancelled meanwhile: it ends here
                self.waiting[key] = None
                return
            free()  # the app is done with it: the next request takes its place while the outcome is written
            finished = await self._until_recorded(request.id, lambda: self.finishes((request.id, outcome)))
            if finished is not None:  # else its claim was lost: it runs again
                self.recent.add(finished)
            self._changed(request.id)
            if finished is not None and finished.webhook_url:  # on its own: the app's slot frees now
                asyncio.get_running_loop().create_task(self._deliver_webhook(finished))
        except Exception:
            logger.exception("request %s: recording its outcome or starting its webhook failed", request.id)
        finally:
            self.claimed.discard(request.id)
            free()

    async def _until_recorded(self, request_id: str, write: Callable[[], Awaitable[Any]]) -> Any:
        """Write a request's outcome, trying again while the registry refuses (locked,
        unreachable): a finished request never stays IN_PROGRESS behind a busy database,
        which would run it a second time after the next restart. Other errors are not
        the database's and are raised."""
        delay = RECORD_RETRY_S[0]
        while True:
            try:
                return await write()
            except OperationalError as error:
                logger.warning("request %s: recording its outcome failed (%s); retrying in %gs",
                               request_id, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_S[1])

    async def _handle(self, owner: str, app: str) -> Any:
        name = serve_app_name(owner, app)
        if name not in self.handles:  # a look-up asks Serve's controller: off the event loop
            self.handles[name] = await asyncio.to_thread(serve.get_app_handle, name)
        return self.handles[name]

    async def _call(self, request: QueuedRequest) -> Optional[CallOutcome]:
        try:
            handle = await self._handle(request.owner, request.app)
        except Exception as error:  # deleted since it was queued, or not running
            return CallOutcome.failed(503, f"{request.owner}/{request.app} is not serving: {error}", request.id)
        response = handle.call_path.remote(request.path, request.payload, request.id, request.caller,
                                           self.queue.dispatcher)
        self.running[request.id] = response
        try:
            return await self._answer_unless_deleted(request, response)
        except RequestCancelledError:
            return CallOutcome.failed(CANCELLED_STATUS, "Request cancelled")
        except (RayActorError, ActorUnavailableError, RunnerLost) as error:
            run = request.attempts + 1  # this run, if its replica began it before it died
            what = "runner" if isinstance(error, RunnerLost) else "replica"
            if run < request.max_attempts:
                logger.warning("request %s: the app's %s died (%s); retrying", request.id, what,
                               error if isinstance(error, RunnerLost) else type(error).__name__)
                return None
            tries = "once" if run == 1 else f"in each of {run} attempts"
            detail = f"The app's {what} died while serving this request ({tries})"
            return CallOutcome.failed(500, detail, request.id)
        except Exception as error:
            logger.exception("request %s failed in the queue", request.id)
            return CallOutcome.failed(500, str(error) or "Internal Server Error", request.id)
        finally:
            self.running.pop(request.id, None)

    async def _answer_unless_deleted(self, request: QueuedRequest, response: Any) -> CallOutcome:
        """The app's answer; a handle to an app deleted meanwhile would wait for a replica
        forever, so the registry is asked every few seconds whether the app still exists."""

        async def answer() -> Any:
            return await response

        pending = asyncio.ensure_future(answer())
        while True:
            done, _ = await asyncio.wait({pending}, timeout=APP_CHECK_S)
            if done:
                return pending.result()
            try:
                exists = await asyncio.to_thread(self.registry.get, request.owner, request.app) is not None
            except Exception as error:  # a busy or unreachable registry says nothing of the app: wait on
                logger.warning("request %s: checking that %s/%s still exists failed (%s)", request.id,
                               request.owner, request.app, error)
                continue
            if not exists:
                response.cancel()
                pending.cancel()
                self.handles.pop(serve_app_name(request.owner, request.app), None)
                detail = f"{request.owner}/{request.app} was deleted before it answered"
                return CallOutcome.failed(404, detail, request.id)

    async def _deliver_webhook(self, request: QueuedRequest) -> None:
        """POST fal's webhook body, with retries and backoff; a receiver that keeps failing
        is given up on without holding anything else back."""
        error = _error_text(request)
        body = {
            "request_id": request.id, "gateway_request_id": request.id, "status": "ERROR" if error else "OK",
            "payload": None if error else request.result, "error": error,
        }
        async with httpx.AsyncClient(timeout=10) as client:
            for delay in WEBHOOK_DELAYS_S:
                await asyncio.sleep(delay)
                try:
                    answer = await client.post(request.webhook_url or "", json=body)
                    if answer.status_code < 300:
                        await asyncio.to_thread(self.queue.set_webhook_state, request.id, "delivered")
                        return
                except Exception:  # refused, unreachable, malformed: all count as a failed try
                    pass
        logger.warning("request %s: webhook %s failed %d times; giving up", request.id, request.webhook_url,
                       len(WEBHOOK_DELAYS_S))
        await asyncio.to_thread(self.queue.set_webhook_state, request.id, "failed")

    async def _leases_forever(self) -> None:
        """Keep this dispatcher's claims and put back in line the requests of dispatchers
        that stopped keeping theirs (a restart's predecessor, another node's that died)."""
        while not self.stopping or any(self.per_app.values()):  # a stopping one keeps the claims it still runs
            try:
                await asyncio.to_thread(self.queue.renew, list(self.claimed))
                reclaimed, ended = await asyncio.to_thread(self.queue.reclaim_expired)
                for request_id in ended:
                    await self._ended(request_id)
                if reclaimed:
                    logger.info("%d request(s) whose dispatcher stopped go back in line", reclaimed)
                    self._next_scan = 0.0
                    self.wakeup.set()
            except Exception as error:  # the loop must outlive any one failure: its claims would lapse
                logger.warning("queue leases: %s: %s; trying again", type(error).__name__, error)
            await asyncio.sleep(LEASE_S / 4)

    async def _housekeeping_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.queue.expire, self.results_ttl_s)
            except Exception:
                logger.exception("expiring old queue results failed")
            await asyncio.sleep(600)


def queue_server_target(config: dict[str, Any], version: str) -> RunTarget:
    # No access log: a line for every submit, status and fetch is CPU the service spends under load
    # (about 6% of it in a burst), and each request's own record is its row.
    deployment = serve.deployment(QueueServer, name=DEPLOYMENT_NAME, num_replicas=config.get("queue_dispatchers", 1),
                                  ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=1000,
                                  graceful_shutdown_timeout_s=DRAIN_S, logging_config={"enable_access_log": False})
    deployment = ray_private.pinned(deployment, version)
    return RunTarget(target=deployment.bind(config), name=APP_NAME, route_prefix=ROUTE)
