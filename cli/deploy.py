"""`platform deploy` and `platform run`: an App class from a file -> a serving app, through
the control-plane API (the server reads the app in a sandbox and deploys it)."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Iterator, Optional, TypeVar

import click

from tenantserve.adapters.fal.bundle import prepare
from tenantserve.adapters.fal.loader import AppLoadError
from tenantserve.adapters.fal.options import OptionsError
from tenantserve.adapters.fal.upload import AppUpload, collect

from .client import ControlPlaneClient, for_user
from .common import console, default_user, friendly_errors, user_option
from .plan import print_plan

AUTH_MODES = click.Choice(["private", "shared", "public"])


T = TypeVar("T")


def _loaded(ref: str, load: Callable[[], T]) -> T:
    """Load the app file on this machine, its errors as the command's."""
    with console.status(f"Loading {ref}"):
        try:
            return load()
        except (AppLoadError, OptionsError) as error:
            raise click.ClickException(str(error)) from None


def follow_deploy(events: Iterator[dict[str, Any]], what: str, seen: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Print a deploy's progress as the platform streams it; returns its `done` event, or
    fails with the platform's reason. `seen` gets the app the platform accepted."""
    label = what
    with console.status(f"Deploying {label}") as status:
        for event in events:
            if event["event"] == "accepted":
                label = f"{event['owner']}/{event['app']}"
                if seen is not None:
                    seen.update(event)
            elif event["event"] == "progress":
                console.print(f"  {event['line']}")
                status.update(f"Deploying {label}: {event['line']}")
            elif event["event"] == "failed":
                raise click.ClickException(f"deploy of {label} failed:\n{event['detail']}")
            elif event["event"] == "done":
                return event
    raise click.ClickException(f"the platform ended the deploy of {label} without saying how it went")


def _request(upload: AppUpload, app_name: Optional[str], auth: Optional[str], ephemeral: bool = False) -> dict[str, Any]:
    return {"app": upload.model_dump(), "app_name": app_name, "auth": auth, "ephemeral": ephemeral}


@click.command()
@click.argument("ref", metavar="FILE::CLASS")
@click.option("--app-name", default=None, help="Name of the app (default: the class's, in kebab-case).")
@click.option("--auth", type=AUTH_MODES, default=None,
              help="Who may call it: the owner's keys (private, the default), any key (shared), anyone (public).")
@click.option("--dry-run", is_flag=True,
              help="Load and check the app, print what a deploy would create, and stop (no platform needed).")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON, OpenAPI schema included.")
@user_option
@friendly_errors
def deploy(ref: str, app_name: Optional[str], auth: Optional[str], dry_run: bool, as_json: bool,
           user: Optional[str]) -> None:
    """Deploy an App class; wait until it answers and print its URL."""
    if dry_run:
        bundle = _loaded(ref, lambda: prepare(ref, owner=user or default_user(), app_name=app_name))
        return print_plan(bundle.with_auth(auth), as_json)
    client = ControlPlaneClient()
    upload = _loaded(ref, lambda: collect(ref))
    done = follow_deploy(client.deploy_events("POST", "/apps", json=_request(upload, app_name, auth), params=for_user(user)),
                         ref)
    console.print(f"[green]Deployed[/green] {done['owner']}/{done['app']} (revision {done['revision']})")
    console.print(f"  URL: {done['url']}  (auth: {done['auth']})")


@click.command()
@click.argument("ref", metavar="FILE::CLASS")
@user_option
@friendly_errors
def run(ref: str, user: Optional[str]) -> None:
    """Serve an App class, public, until Ctrl-C, then remove it."""
    client = ControlPlaneClient()
    upload = _loaded(ref, lambda: collect(ref))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    accepted: dict[str, Any] = {}
    try:
        done = follow_deploy(client.deploy_events("POST", "/apps", json=_request(upload, None, "public", ephemeral=True),
                                           params=for_user(user)), ref, accepted)
        console.print(f"Access your exposed service at {done['url']}")
        console.print("Press Ctrl-C to stop it.")
        stop.wait()
    finally:
        if accepted:
            label = f"{accepted['owner']}/{accepted['app']}"
            with console.status("Removing the app"):
                try:
                    client.call("DELETE", client.app_path(label))
                except click.ClickException as error:
                    if "no app" not in str(error):
                        raise
            console.print(f"Removed {label}")
