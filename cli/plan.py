"""`platform deploy --dry-run`: what a deploy would create, printed."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.table import Table

from tenantserve.adapters.fal.bundle import AppBundle
from tenantserve.adapters.fal.loader import AppLoadError
from tenantserve.adapters.fal.plan import plan

from .common import console


def print_plan(bundle: AppBundle, as_json: bool) -> None:
    try:
        found = plan(bundle)
    except AppLoadError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(asdict(found), indent=2))
        return
    console.print(f"[green]Would deploy[/green] {found.owner}/{found.app} (revision {found.revision}) "
                  f"at {found.route}, auth {found.auth}")
    for machine_type, resources in found.resources.items():
        needs = ", ".join(f"{name}={amount:g}" for name, amount in resources.items())
        console.print(f"  machine {machine_type}: each replica takes {needs}")
    scaling = found.autoscaling
    console.print(f"  replicas: {scaling['min_replicas']} to {scaling['max_replicas']} (one started first), "
                  f"{found.max_ongoing_requests} request(s) at a time each, "
                  f"scaled down after {scaling['downscale_delay_s']:g}s idle")
    if found.request_timeout:
        console.print(f"  request timeout: {found.request_timeout:g}s")
    console.print(f"  environment: {', '.join(found.requirements) or 'the node’s packages (no requirements)'}")
    if found.local_files:
        console.print(f"  local modules: {len(found.local_files)} file(s)")
    table = Table("endpoint", "path", "kind")
    for endpoint in found.endpoints:
        table.add_row(endpoint["name"], endpoint["path"], endpoint["kind"])
    console.print(table)
    console.print(f"  OpenAPI schema: {len(found.openapi.get('paths', {}))} path(s) (`--json` prints it)")
