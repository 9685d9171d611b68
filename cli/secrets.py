"""`platform secrets ...`: values that reach your replicas as environment variables."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import click
from rich.table import Table

from .client import ControlPlaneClient, for_user
from .common import console, user_option


@click.group("secrets")
def secrets_group() -> None:
    """Set, list and unset your secrets (encrypted at rest; replicas started after a change see it)."""


@secrets_group.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@user_option
def set_secret(assignments: tuple[str, ...], user: Optional[str]) -> None:
    """Set secrets, each as NAME=VALUE."""
    values = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep:
            raise click.BadParameter(f"{assignment!r} is not NAME=VALUE", param_hint="NAME=VALUE")
        values[name] = value
    api = ControlPlaneClient()
    api.call("PUT", "/secrets", params=for_user(user), json={"values": values})
    owner = user or api.call("GET", "/me")["user"]
    for name in values:
        console.print(f"Set {name} for {owner}")


@secrets_group.command("list")
@user_option
def list_secrets(user: Optional[str]) -> None:
    """List secret names (never values)."""
    table = Table("name", "updated")
    for secret in ControlPlaneClient().call("GET", "/secrets", params=for_user(user)):
        table.add_row(secret["name"], secret["updated_at"][:19].replace("T", " "))
    console.print(table)


@secrets_group.command("unset")
@click.argument("name")
@user_option
def unset_secret(name: str, user: Optional[str]) -> None:
    """Remove a secret."""
    api = ControlPlaneClient()
    api.call("DELETE", f"/secrets/{quote(name, safe='')}", params=for_user(user))
    console.print(f"Unset {name} for {user or api.call('GET', '/me')['user']}")
