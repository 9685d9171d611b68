"""`platform deploy` and `platform run`: an App class from a file -> a serving app, through
the control-plane API (the server reads the app in a sandbox and deploys it)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import click
from rich.markup import escape

from tenantserve.adapters.fal.loader import AppLoadError, enclosing_package, parse_ref
from tenantserve.adapters.fal.options import OptionsError
from tenantserve.adapters.fal.plan import DeployPlan
from tenantserve.adapters.fal.upload import AppUpload, collect, read_sandboxed

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
    if dry_run:  # read as the server will: only what the upload ships is importable
        upload = _loaded(ref, lambda: collect(ref))
        bundle, found = _loaded(ref, lambda: read_sandboxed(upload, user or default_user(), app_name, sandboxed=False))
        bundle = bundle.with_auth(auth)
        return print_plan(DeployPlan(**{**found, "auth": bundle.options.app_auth, "revision": bundle.revision}), as_json)
    client = ControlPlaneClient()
    upload = _loaded(ref, lambda: collect(ref))
    done = follow_deploy(client.deploy_events("POST", "/apps", json=_request(upload, app_name, auth), params=for_user(user)),
                         ref)
    console.print(f"[green]Deployed[/green] {done['owner']}/{done['app']} (revision {done['revision']})")
    console.print(f"  URL: {done['url']}  (auth: {done['auth']})")


def _follow_logs(client: ControlPlaneClient, app: str, stop: threading.Event) -> None:
    """Print the app's replica logs as they come (fal run's live logs), until `stop`; a
    dropped stream is taken up again from the time of the last line printed, without the
    lines of that time already printed."""
    last_time, printed_then = None, set()
    while not stop.is_set():
        replay = last_time
        try:
            for event in client.stream("GET", f"{client.app_path(app)}/logs",
                                       params={"follow": True, **({"since": last_time} if last_time else {})}):
                if stop.is_set():
                    return
                if replay and (event["time"] < replay or (event["time"] == replay and event["line"] in printed_then)):
                    continue
                console.print(event["line"], markup=False)
                if event["time"] != last_time:
                    last_time, printed_then = event["time"], set()
                printed_then.add(event["line"])
        except click.ClickException:
            pass
        stop.wait(1)


def _redeploys(client: ControlPlaneClient, ref: str, accepted: dict[str, Any], stop: threading.Event) -> None:
    """`run --reload`: each change under the app file's folder deploys the app again under
    the run's name; a deploy that fails says why and the running version keeps serving."""
    import watchfiles

    folder = parse_ref(ref)[0].resolve().parent
    package = enclosing_package(folder)
    watched = sorted({folder, *([package] if package else [])})  # what ships with the app from its project
    for changes in watchfiles.watch(*watched, stop_event=stop, raise_interrupt=False):
        names = ", ".join(sorted({Path(path).name for _, path in changes}))
        console.print(f"[yellow]Changed[/yellow] {names}: deploying again")
        try:
            upload = _loaded(ref, lambda: collect(ref))
            request = _request(upload, accepted["app"], "public", ephemeral=True)
            done = follow_deploy(client.deploy_events("POST", "/apps", json=request, params=for_user(accepted["owner"])),
                                 ref)
            console.print(f"[green]Reloaded[/green] (revision {done['revision']})")
        except click.ClickException as error:
            console.print(f"[red]{escape(error.message)}[/red]")


@click.command()
@click.argument("ref", metavar="FILE::CLASS")
@click.option("--reload", is_flag=True, help="Deploy again whenever a file in the app's folder changes.")
@user_option
@friendly_errors
def run(ref: str, reload: bool, user: Optional[str]) -> None:
    """Serve an App class, public, with its logs, until Ctrl-C, then remove it."""
    client = ControlPlaneClient()
    upload = _loaded(ref, lambda: collect(ref))
    stop = threading.Event()

    def interrupted(*_: Any) -> None:
        """The first Ctrl-C stops after a deploy in flight; a second stops now."""
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    accepted: dict[str, Any] = {}
    try:
        done = follow_deploy(client.deploy_events("POST", "/apps", json=_request(upload, None, "public", ephemeral=True),
                                           params=for_user(user)), ref, accepted)
        label = f"{accepted['owner']}/{accepted['app']}"
        console.print(f"Access your exposed service at {done['url']}")
        console.print("Press Ctrl-C to stop it." + (" Watching for changes." if reload else ""))
        threading.Thread(target=_follow_logs, args=(client, label, stop), daemon=True).start()
        if reload:
            _redeploys(client, ref, accepted, stop)
        stop.wait()
    finally:
        stop.set()
        if accepted:
            label = f"{accepted['owner']}/{accepted['app']}"
            with console.status("Removing the app"):
                try:
                    client.call("DELETE", client.app_path(label))
                except click.ClickException as error:
                    if "no app" not in str(error):
                        raise
            console.print(f"Removed {label}")
