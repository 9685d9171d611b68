"""The CLI's client of the control-plane API (`/api`): the platform's URL and a key are
all it needs, from the platform's own machine or from a laptop."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator, Optional
from urllib.parse import quote

import click
import httpx

from tenantserve.platform.cluster.ray_cluster import recorded, tls_verify, untrusted_certificate
from tenantserve.platform.core import settings
from tenantserve.platform.core.naming import check_name

from .common import BAD_KEY, NO_KEY, configured_key

URL_VAR = settings.URL.name
RESUME_TRIES = 10  # a deploy stream that ended early is asked for again this often in a row


def platform_url() -> str:
    """$TENANTSERVE_URL, else the URL of the platform `platform up` started here."""
    url = os.environ.get(URL_VAR)
    if url:
        return url.rstrip("/")
    current = recorded()
    if current is None:
        raise click.ClickException(f"no platform to talk to: set {URL_VAR} to its URL, or start one with `platform up`")
    return current.http_url.rstrip("/")


def for_user(user: Optional[str]) -> dict[str, str]:
    """The query that makes an admin's call act for `user` (none: the key's own user)."""
    return {"user": user} if user else {}


def _bootstrap(url: str) -> Optional[str]:
    """On the machine whose `platform up` started the platform, with no user yet: its first
    caller becomes the admin (the operator's direct access, as `platform deploy` does)."""
    current = recorded()
    if current is None or os.environ.get(URL_VAR) or current.http_url.rstrip("/") != url:
        return None
    from tenantserve.platform.store.registry import Registry

    from .common import caller

    registry = Registry()
    if registry.has_users():
        return None
    caller(registry)
    return configured_key()


class ControlPlaneClient:
    """Calls to `/api/v1/...`; an answer the API refuses becomes the CLI's one-line error."""

    def __init__(self, url: Optional[str] = None, key: Optional[str] = None) -> None:
        self.url = url or platform_url()
        self.key = key or configured_key() or _bootstrap(self.url)
        if self.key is None:
            raise click.ClickException(NO_KEY)
        self._http = httpx.Client(base_url=f"{self.url}/api/v1", timeout=60, verify=tls_verify(self.url),
                                  headers={"Authorization": f"Key {self.key}"})
        self._me: Optional[dict[str, Any]] = None

    def _failed(self, error: httpx.HTTPError) -> click.ClickException:
        if isinstance(error, httpx.ConnectError) and (
                "CERTIFICATE_VERIFY_FAILED" in str(error) or "certificate verify failed" in str(error)):
            return click.ClickException(untrusted_certificate(self.url, error))
        return click.ClickException(f"the platform at {self.url} did not answer: {error}")

    @staticmethod
    def _refused(response: httpx.Response) -> Optional[click.ClickException]:
        if response.status_code == 401:
            return click.ClickException(BAD_KEY)
        if response.status_code < 400:
            return None
        try:
            detail = response.json()["detail"]
        except (ValueError, KeyError, TypeError):
            detail = response.text.strip() or response.reason_phrase
        if isinstance(detail, list):  # a request the API's schema refused
            detail = "; ".join(str(item.get("msg", item)) for item in detail)
        return click.ClickException(str(detail))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise self._failed(error) from None
        refused = self._refused(response)
        if refused is not None:
            raise refused
        return response.json() if response.content else None

    def _events(self, method: str, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        with self._http.stream(method, path, timeout=httpx.Timeout(60, read=None), **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise self._refused(response)  # type: ignore[misc]
            for line in response.iter_lines():
                if line.strip():
                    event = json.loads(line)
                    if event.get("event") != "heartbeat":
                        yield event

    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The events of an NDJSON answer (log lines), as they come."""
        try:
            yield from self._events(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise self._failed(error) from None

    def deploy_events(self, method: str, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """A deploy's events, as they come. The deploy goes on on the server when its stream
        ends early (a proxy reload, a dropped connection): the rest of its events are asked
        for again, from where the stream stopped, until its last one."""
        deploy_id, seen, tries = None, 0, 0
        events = self._events(method, path, **kwargs)
        while True:
            try:
                for event in events:
                    deploy_id = deploy_id or event.get("deploy_id")
                    seen += 1
                    tries = 0
                    yield event
                return
            except httpx.TransportError as error:
                tries += 1
                if deploy_id is None or tries > RESUME_TRIES:
                    raise self._failed(error) from None
            except httpx.HTTPError as error:
                raise self._failed(error) from None
            time.sleep(min(tries, 5))
            events = self._events("GET", f"/deploys/{deploy_id}", params={"after": seen})

    def me(self) -> dict[str, Any]:
        if self._me is None:
            self._me = self.call("GET", "/me")
        return self._me

    def app_path(self, name: str, user: Optional[str] = None) -> str:
        """`/apps/<owner>/<app>` for `NAME` (the caller's, or --user's) or `USER/NAME`."""
        owner, _, app = name.rpartition("/")
        owner = check_name("user", owner or user or self.me()["user"])
        return f"/apps/{quote(owner, safe='')}/{quote(check_name('app', app), safe='')}"
