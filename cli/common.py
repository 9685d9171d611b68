"""What every `platform` command shares: who the caller is, where the cluster is, errors."""

from __future__ import annotations

import functools
import getpass
import os
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, TypeVar

import click
from rich.console import Console

from tenantserve.platform.cluster.ray_cluster import ClusterError, ClusterInfo, connect, state_dir
from tenantserve.platform.control.accounts import AccessError, Principal, first_admin, principal
from tenantserve.platform.core import settings
from tenantserve.platform.core.naming import InvalidNameError
from tenantserve.platform.ops.logs import LogsError
from tenantserve.platform.store.registry import Registry, RegistryError

console = Console(highlight=False, soft_wrap=True)
if not console.is_terminal:
    console.width = 200  # piped output: tables whole, not cut at 80 columns
F = TypeVar("F", bound=Callable[..., Any])

KEY_ENV_VARS = (settings.KEY.name, "FAL_KEY")
NO_KEY = "no API key: set TENANTSERVE_KEY (or FAL_KEY) to KEY_ID:KEY_SECRET, or run `platform login KEY`"
BAD_KEY = "the configured API key is unknown or revoked"


def default_user() -> str:
    return settings.USER.get() or getpass.getuser().lower()


address_option = click.option(
    "--address", envvar="RAY_ADDRESS", default=None,
    help="Ray cluster address (default: the local platform, started if none runs).",
)
user_option = click.option(
    "--user", default=None, help="Act as this user (an admin's key may act for any user; default: the key's own).",
)


SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def replicas_text(replicas: dict[str, int]) -> str:
    """`{"RUNNING": 2, "STARTING": 1}` -> `2 running, 1 starting`; none: `0`."""
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(replicas.items())) or "0"


def parse_since(value: Optional[str]) -> Optional[datetime]:
    """`--since`: `30m`, `2h`, `7d` ago, or an ISO 8601 time (this machine's local time
    unless it says otherwise)."""
    if not value:
        return None
    if value[-1:] in SINCE_UNITS and value[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=int(value[:-1]) * SINCE_UNITS[value[-1]])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an age (30s, 10m, 2h, 7d) nor an ISO 8601 time",
                                 param_hint="--since") from None
    return moment if moment.tzinfo else moment.astimezone()


def connect_cluster(address: str | None) -> ClusterInfo:
    with console.status("Connecting to the Ray cluster"):
        info = connect(address)
    if info.fresh:
        restore_registered_apps()
    return info


def restore_registered_apps() -> None:
    """A cluster that just started runs nothing: bring back every app the registry holds."""
    from tenantserve.platform.control.platform_apps import restore_all

    with console.status("Restoring registered apps") as status:
        failures = restore_all(Registry(), progress=status.update)
    for line in failures:
        console.print(f"[red]not restored[/red] {line}")


def _credentials_file():  # type: ignore[no-untyped-def]
    return state_dir() / "credentials"


def configured_key() -> Optional[str]:
    """The caller's `key_id:secret`: $TENANTSERVE_KEY, $FAL_KEY, or the saved credentials."""
    for name in KEY_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name].strip()
    path = _credentials_file()
    return path.read_text().strip() if path.exists() else None


def save_key(key: str) -> None:
    path = _credentials_file()
    path.write_text(key + "\n")
    path.chmod(0o600)


def bootstrap_admin(registry: Registry) -> Optional[str]:
    """On a platform with no users yet, make this machine's user its admin and save the
    key in the state directory (the operator's direct access); returns the key."""
    if configured_key() is not None:
        return None
    name = default_user()
    key = first_admin(registry, name)
    if key is None:
        return None
    save_key(key)
    # On stderr: a command's own output (`status --json`, a new key) stays parseable.
    click.echo(f"Created admin user {name}; its API key is in {_credentials_file()}", err=True)
    return key


def caller(registry: Registry) -> Principal:
    """The user behind the configured key; on a platform with no users yet, the first
    caller becomes its admin."""
    key = bootstrap_admin(registry) or configured_key()
    if key is None:
        raise click.ClickException(NO_KEY)
    who = principal(registry, key)
    if who is None:
        raise click.ClickException(BAD_KEY)
    return who


def friendly_errors(command: F) -> F:
    """Turn the platform's own errors into a one-line `Error: ...` and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (AccessError, ClusterError, InvalidNameError, LogsError, RegistryError, ValueError) as error:
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]
