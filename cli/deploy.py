"""`platform deploy` and `platform run`: an App class from a file -> a serving app."""

from __future__ import annotations

import secrets
import signal
import threading
from dataclasses import replace
from typing import Optional

import click

from tenantserve.adapters.fal.bundle import AppBundle, prepare
from tenantserve.adapters.fal.loader import AppLoadError
from tenantserve.adapters.fal.options import OptionsError
from tenantserve.platform import apps
from tenantserve.platform.registry import Registry

from .common import acting_user, address_option, connect_cluster, console, default_user, friendly_errors, user_option
from .plan import print_plan

AUTH_MODES = click.Choice(["private", "shared", "public"])


def _load(ref: str, owner: str, app_name: Optional[str], auth: Optional[str]) -> AppBundle:
    with console.status(f"Loading {ref}"):
        try:
            bundle = prepare(ref, owner=owner, app_name=app_name)
        except (AppLoadError, OptionsError) as error:
            raise click.ClickException(str(error)) from None
    if auth is not None:
        bundle = replace(bundle, options=bundle.options.model_copy(update={"app_auth": auth}))
    return bundle


def deploy_bundle(bundle: AppBundle, http_url: str, registry: Optional[Registry], register: bool = True) -> str:
    """Deploy with progress on the console; a failure becomes the command's error."""
    label = f"{bundle.owner}/{bundle.app_name}"
    with console.status(f"Deploying {label}") as status:
        def progress(line: str) -> None:
            console.print(f"  {line}")
            status.update(f"Deploying {label}: {line}")

        try:
            return apps.deploy(bundle, http_url, registry, progress, register=register)
        except apps.DeployError as error:
            raise click.ClickException(f"deploy of {label} failed:\n{error}") from None


@click.command()
@click.argument("ref", metavar="FILE::CLASS")
@click.option("--app-name", default=None, help="Name of the app (default: the class's, in kebab-case).")
@click.option("--auth", type=AUTH_MODES, default=None,
              help="Who may call it: the owner's keys (private, the default), any key (shared), anyone (public).")
@click.option("--dry-run", is_flag=True,
              help="Load and check the app, print what a deploy would create, and stop (no cluster needed).")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON, OpenAPI schema included.")
@user_option
@address_option
@friendly_errors
def deploy(ref: str, app_name: Optional[str], auth: Optional[str], dry_run: bool, as_json: bool, user: Optional[str],
           address: Optional[str]) -> None:
    """Deploy an App class; wait until it answers and print its URL."""
    if dry_run:
        return print_plan(_load(ref, user or default_user(), app_name, auth), as_json)
    registry = Registry()
    bundle = _load(ref, acting_user(registry, user), app_name, auth)
    cluster = connect_cluster(address)
    url = deploy_bundle(bundle, cluster.http_url, registry)
    console.print(f"[green]Deployed[/green] {bundle.owner}/{bundle.app_name} (revision {bundle.revision})")
    console.print(f"  URL: {url}  (auth: {bundle.options.app_auth})")


@click.command()
@click.argument("ref", metavar="FILE::CLASS")
@user_option
@address_option
@friendly_errors
def run(ref: str, user: Optional[str], address: Optional[str]) -> None:
    """Serve an App class, public, until Ctrl-C, then remove it."""
    registry = Registry()
    loaded = _load(ref, acting_user(registry, user), None, "public")
    bundle = replace(loaded, app_name=f"{loaded.app_name[:56]}-{secrets.token_hex(3)}")
    cluster = connect_cluster(address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        url = deploy_bundle(bundle, cluster.http_url, registry, register=False)
        console.print(f"Access your exposed service at {url}")
        console.print("Press Ctrl-C to stop it.")
        stop.wait()
    finally:
        with console.status("Removing the app"):
            apps.delete(bundle.owner, bundle.app_name, registry=None)
        console.print(f"Removed {bundle.owner}/{bundle.app_name}")
