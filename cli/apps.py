"""`platform apps ...`: the caller's deployed apps."""

from __future__ import annotations

from typing import Optional

import click
from rich.table import Table

from tenantserve.platform import apps as platform_apps
from tenantserve.platform.naming import parse_app_ref
from tenantserve.platform.registry import Registry

from .common import acting_user, address_option, caller, connect_cluster, console, friendly_errors, user_option


@click.group("apps")
def apps_group() -> None:
    """List and delete deployed apps."""


@apps_group.command("list")
@user_option
@click.option("--all-users", is_flag=True, help="List every user's apps.")
@address_option
@friendly_errors
def list_(user: Optional[str], all_users: bool, address: Optional[str]) -> None:
    """List apps with their state, replicas and URL."""
    registry = Registry()
    if all_users and not caller(registry).admin:
        raise click.ClickException("--all-users needs an admin key")
    owner = None if all_users else acting_user(registry, user)
    cluster = connect_cluster(address)
    rows = platform_apps.list_apps(cluster.http_url, registry, owner=owner)
    table = Table("app", "revision", "auth", "state", "replicas", "url")
    for row in rows:
        replicas = ", ".join(f"{n} {s.lower()}" for s, n in sorted(row.replicas.items())) or "0"
        table.add_row(f"{row.owner}/{row.name}", row.revision or "", row.auth, row.status, replicas, row.url)
    console.print(table if rows else "No apps deployed.")


@apps_group.command("delete")
@click.argument("name")
@user_option
@address_option
@friendly_errors
def delete(name: str, user: Optional[str], address: Optional[str]) -> None:
    """Delete an app (NAME, or USER/NAME for an admin)."""
    registry = Registry()
    owner, app = parse_app_ref(name, default_owner=acting_user(registry, user))
    owner = acting_user(registry, owner)
    connect_cluster(address)
    if not platform_apps.delete(owner, app, registry):
        raise click.ClickException(f"no app {owner}/{app}")
    console.print(f"Deleted {owner}/{app}")
