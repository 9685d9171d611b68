"""`platform secrets ...`: values that reach your replicas as environment variables."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import click
from rich.table import Table

from .client import ControlPlane
from .common import console, user_option


def _for(user: Optional[str]) -> dict[str, str]:
    return {"user": user} if user else {}


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
    api = ControlPlane()
    api.call("PUT", "/secrets", params=_for(user), json={"values": values})
    owner = user or api.call("GET", "/me")["user"]
    for name in values:
        console.print(f"Set {name} for {owner}")


@secrets_group.command("list")
@user_option
def list_secrets(user: Optional[str]) -> None:
    """List secret names (never values)."""
    table = Table("name", "updated")
    for secret in ControlPlane().call("GET", "/secrets", params=_for(user)):
        table.add_row(secret["name"], secret["updated_at"][:19].replace("T", " "))
    console.print(table)


@secrets_group.command("unset")
@click.argument("name")
@user_option
def unset_secret(name: str, user: Optional[str]) -> None:
    """Remove a secret."""
    api = ControlPlane()
    api.call("DELETE", f"/secrets/{quote(name, safe='')}", params=_for(user))
    console.print(f"Unset {name} for {user or api.call('GET', '/me')['user']}")
