"""`platform users ...`, `platform keys ...` and `platform login`: who may do what."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import click
from rich.table import Table

from tenantserve.platform.control.accounts import require_admin
from tenantserve.platform.store.registry import Registry

from .client import ControlPlaneClient, for_user
from .common import address_option, caller, connect_cluster, console, friendly_errors, save_key, user_option


@click.group("users")
def users_group() -> None:
    """Create and list users (admin only)."""


@users_group.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an admin.")
def create_user(name: str, admin: bool) -> None:
    """Create a user and print its first API key (shown once)."""
    key = ControlPlaneClient().call("POST", "/users", json={"name": name, "admin": admin})["key"]
    console.print(f"Created user {name}{' (admin)' if admin else ''}. API key, shown once:")
    console.print(key)


@users_group.command("list")
def list_users() -> None:
    """List users."""
    table = Table("user", "admin")
    for user in ControlPlaneClient().call("GET", "/users"):
        table.add_row(user["name"], "yes" if user["admin"] else "")
    console.print(table)


@users_group.command("clean-names")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@address_option
@friendly_errors
def clean_names(dry_run: bool, address: Optional[str]) -> None:
    """Remove users, apps and secrets stored or deployed under names the rules refuse."""
    from tenantserve.platform.control.platform_apps import clean_invalid_names

    registry = Registry()
    require_admin(caller(registry))
    connect_cluster(address)
    found = clean_invalid_names(registry, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    lines = [*(f"user {name!r} (with its keys, secrets and apps)" for name in found.registry.users),
             *(f"app {owner!r}/{name!r}" for owner, name in found.registry.apps),
             *(f"secret {name!r} of {owner!r}" for owner, name in found.registry.secrets),
             *(f"Serve app {name!r}" for name in found.serve_apps)]
    for line in lines:
        console.print(f"{verb} {line}", markup=False)
    if not lines:
        console.print("Every stored and deployed name follows the naming rules.")


@users_group.command("quota")
@click.argument("name")
@click.option("--apps", type=click.IntRange(min=0), default=None, help="Most apps.")
@click.option("--replicas", type=click.IntRange(min=0), default=None, help="Most replicas, summed over max_concurrency.")
@click.option("--gpus", type=click.IntRange(min=0), default=None, help="Most GPUs, summed over max_concurrency.")
@click.option("--clear", is_flag=True, help="Remove every limit.")
def set_quota(name: str, apps: Optional[int], replicas: Optional[int], gpus: Optional[int], clear: bool) -> None:
    """Show or set a user's quota (limits not given stay as they are)."""
    api = ControlPlaneClient()
    path = f"/users/{quote(name, safe='')}/quota"
    limits = {} if clear else api.call("GET", path)
    given = {"apps": apps, "replicas": replicas, "gpus": gpus}
    if clear or any(value is not None for value in given.values()):
        limits = api.call("PUT", path, json={**limits, **{k: v for k, v in given.items() if v is not None}})
    console.print(f"{name}: " + ", ".join(
        f"{k} {'unlimited' if limits.get(k) is None else limits[k]}" for k in ("apps", "replicas", "gpus")))


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke your API keys."""


@keys_group.command("create")
@click.option("--label", default="", help="A note to recognise the key by.")
@click.option("--scope", type=click.Choice(["admin", "api"], case_sensitive=False), default="admin", show_default=True,
              help="admin: manages your apps, keys and secrets too; api: only calls apps (for a service).")
@user_option
def create_key(label: str, scope: str, user: Optional[str]) -> None:
    """Create an API key; the secret is shown once and stored only as a hash."""
    created = ControlPlaneClient().call("POST", "/keys", params=for_user(user),
                                        json={"label": label, "scope": scope.lower()})
    console.print(f"API key for {created['user']}, shown once (send it as 'Authorization: Key <key>'):")
    console.print(created["key"])


@keys_group.command("list")
@user_option
def list_keys(user: Optional[str]) -> None:
    """List API keys (ids and labels, never secrets)."""
    table = Table("key id", "label", "scope", "created", "state")
    for key in ControlPlaneClient().call("GET", "/keys", params=for_user(user)):
        state = f"revoked {_minute(key['revoked_at'])}" if key["revoked_at"] else "active"
        table.add_row(key["key_id"], key["label"], key["scope"], _minute(key["created_at"]), state)
    console.print(table)


def _minute(stamp: str) -> str:
    return stamp[:16].replace("T", " ")


@keys_group.command("revoke")
@click.argument("key_id")
@user_option
def revoke_key(key_id: str, user: Optional[str]) -> None:
    """Revoke an API key; apps refuse it within seconds."""
    ControlPlaneClient().call("DELETE", f"/keys/{quote(key_id, safe='')}", params=for_user(user))
    console.print(f"Revoked {key_id}")


@click.command()
def whoami() -> None:
    """Print the user your API key belongs to."""
    console.print(ControlPlaneClient().call("GET", "/me")["user"])


@click.command()
@click.argument("key")
def login(key: str) -> None:
    """Save KEY (KEY_ID:KEY_SECRET) as this machine's credentials for the CLI."""
    user = ControlPlaneClient(key=key).call("GET", "/me")["user"]
    save_key(key)
    console.print(f"Logged in as {user}")
