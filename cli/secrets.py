"""`platform secrets ...`: values that reach your replicas as environment variables."""

from __future__ import annotations

from typing import Optional

import click
from rich.table import Table

from tenantserve.platform.cluster import state_dir
from tenantserve.platform.registry import Registry
from tenantserve.platform.secrets import SecretBox, key_file, load_key

from .common import accounts, console, friendly_errors, user_option


@click.group("secrets")
def secrets_group() -> None:
    """Set, list and unset your secrets (encrypted at rest; replicas started after a change see it)."""


@secrets_group.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@user_option
@friendly_errors
def set_secret(assignments: tuple[str, ...], user: Optional[str]) -> None:
    """Set secrets, each as NAME=VALUE."""
    values = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep:
            raise click.BadParameter(f"{assignment!r} is not NAME=VALUE", param_hint="NAME=VALUE")
        values[name] = value
    box = SecretBox(load_key(key_file(state_dir()), create=True))
    owner = accounts(Registry(), box).set_secrets(values, user)
    for name in values:
        console.print(f"Set {name} for {owner}")


@secrets_group.command("list")
@user_option
@friendly_errors
def list_secrets(user: Optional[str]) -> None:
    """List secret names (never values)."""
    table = Table("name", "updated")
    for name, updated in accounts(Registry()).list_secrets(user).items():
        table.add_row(name, f"{updated:%Y-%m-%d %H:%M:%S}")
    console.print(table)


@secrets_group.command("unset")
@click.argument("name")
@user_option
@friendly_errors
def unset_secret(name: str, user: Optional[str]) -> None:
    """Remove a secret."""
    owner = accounts(Registry()).unset_secret(name, user)
    console.print(f"Unset {name} for {owner}")
