"""`platform users ...`, `platform keys ...` and `platform login`: who may do what."""

from __future__ import annotations

from typing import Optional

import click
from rich.table import Table

from tenantserve.platform.accounts import require_admin
from tenantserve.platform.registry import Quota, Registry

from .common import accounts, address_option, caller, connect_cluster, console, friendly_errors, save_key, user_option


@click.group("users")
def users_group() -> None:
    """Create and list users (admin only)."""


@users_group.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an admin.")
@friendly_errors
def create_user(name: str, admin: bool) -> None:
    """Create a user and print its first API key (shown once)."""
    key = accounts(Registry()).create_user(name, admin=admin)
    console.print(f"Created user {name}{' (admin)' if admin else ''}. API key, shown once:")
    console.print(key)


@users_group.command("list")
@friendly_errors
def list_users() -> None:
    """List users."""
    table = Table("user", "admin")
    for name, admin in accounts(Registry()).list_users():
        table.add_row(name, "yes" if admin else "")
    console.print(table)


@users_group.command("clean-names")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@address_option
@friendly_errors
def clean_names(dry_run: bool, address: Optional[str]) -> None:
    """Remove users, apps and secrets stored or deployed under names the rules refuse."""
    from tenantserve.platform.apps import clean_invalid_names

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
@friendly_errors
def set_quota(name: str, apps: Optional[int], replicas: Optional[int], gpus: Optional[int], clear: bool) -> None:
    """Show or set a user's quota (limits not given stay as they are)."""
    mine = accounts(Registry())
    quota = mine.quota(name)
    if clear:
        quota = Quota()
    quota = Quota(
        max_apps=quota.max_apps if apps is None else apps,
        max_replicas=quota.max_replicas if replicas is None else replicas,
        max_gpus=quota.max_gpus if gpus is None else gpus,
    )
    if clear or apps is not None or replicas is not None or gpus is not None:
        mine.set_quota(name, quota)
    limits = {"apps": quota.max_apps, "replicas": quota.max_replicas, "gpus": quota.max_gpus}
    console.print(f"{name}: " + ", ".join(f"{k} {'unlimited' if v is None else v}" for k, v in limits.items()))


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke your API keys."""


@keys_group.command("create")
@click.option("--label", default="", help="A note to recognise the key by.")
@user_option
@friendly_errors
def create_key(label: str, user: Optional[str]) -> None:
    """Create an API key; the secret is shown once and stored only as a hash."""
    mine = accounts(Registry())
    key = mine.create_key(user, label=label)
    owner = user or mine.who.user
    console.print(f"API key for {owner}, shown once (send it as 'Authorization: Key <key>'):")
    console.print(key)


@keys_group.command("list")
@user_option
@friendly_errors
def list_keys(user: Optional[str]) -> None:
    """List API keys (ids and labels, never secrets)."""
    table = Table("key id", "label", "created", "state")
    for key in accounts(Registry()).list_keys(user):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        table.add_row(key.key_id, key.label, f"{key.created_at:%Y-%m-%d %H:%M}", state)
    console.print(table)


@keys_group.command("revoke")
@click.argument("key_id")
@user_option
@friendly_errors
def revoke_key(key_id: str, user: Optional[str]) -> None:
    """Revoke an API key; apps refuse it within seconds."""
    accounts(Registry()).revoke_key(key_id, user)
    console.print(f"Revoked {key_id}")


@click.command()
@friendly_errors
def whoami() -> None:
    """Print the user your API key belongs to."""
    console.print(caller(Registry()).user)


@click.command()
@click.argument("key")
@friendly_errors
def login(key: str) -> None:
    """Save KEY (KEY_ID:KEY_SECRET) as this machine's credentials for the CLI."""
    user = Registry().authenticate(key)
    if user is None:
        raise click.ClickException("that API key is unknown or revoked")
    save_key(key)
    console.print(f"Logged in as {user}")
