"""`platform deploy --dry-run`: what a deploy would create, printed."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.markup import escape
from rich.table import Table

from tenantserve.adapters.fal.plan import DeployPlan

from .common import console


def print_plan(found: DeployPlan, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(asdict(found), indent=2))
        return
    console.print(f"[green]Would deploy[/green] {escape(found.owner)}/{escape(found.app)} (revision {found.revision}) "
                  f"at {escape(found.route)}, auth {found.auth}")
    for machine_type, resources in found.resources.items():
        needs = ", ".join(f"{name}={amount:g}" for name, amount in resources.items())
        console.print(f"  machine {escape(machine_type)}: each replica takes {escape(needs)}")
    scaling = found.autoscaling
    console.print(f"  replicas: {scaling['min_replicas']} to {scaling['max_replicas']} (one started first), "
                  f"{found.max_ongoing_requests} request(s) at a time each, "
                  f"scaled down after {scaling['downscale_delay_s']:g}s idle")
    if found.request_timeout:
        console.print(f"  request timeout: {found.request_timeout:g}s")
    if found.image:
        console.print(f"  container image: built on the node from {escape(found.image)}"
                      + (f", {len(found.image_files)} context file(s)" if found.image_files else ""))
        console.print(f"  requirements (on top of the image): {escape(', '.join(found.requirements)) or 'none'}")
    else:
        console.print(f"  environment: {escape(', '.join(found.requirements)) or 'the node’s packages (no requirements)'}")
    if found.local_files:
        console.print(f"  local modules: {len(found.local_files)} file(s)")
    if found.project_files:
        console.print(f"  app files: {len(found.project_files)} file(s)")
    table = Table("endpoint", "path", "kind")
    for endpoint in found.endpoints:
        table.add_row(escape(endpoint["name"]), escape(endpoint["path"]), endpoint["kind"])
    console.print(table)
    console.print(f"  OpenAPI schema: {len(found.openapi.get('paths', {}))} path(s) (`--json` prints it)")
