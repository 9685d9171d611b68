"""What every `platform` command shares: who the caller is, where the cluster is, errors."""

from __future__ import annotations

import functools
import getpass
import os
from typing import Any, Callable, TypeVar

import click
from rich.console import Console

from tenantserve.platform.cluster import ClusterError, ClusterInfo, connect
from tenantserve.platform.naming import InvalidNameError, check_name

console = Console(highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def default_user() -> str:
    return os.environ.get("TENANTSERVE_USER") or getpass.getuser().lower()


address_option = click.option(
    "--address", envvar="RAY_ADDRESS", default=None,
    help="Ray cluster address (default: the local platform, started if none runs).",
)
user_option = click.option(
    "--user", default=default_user, show_default="$TENANTSERVE_USER or your login name",
    help="The user the command acts as.",
)


def connect_cluster(address: str | None) -> ClusterInfo:
    with console.status("Connecting to the Ray cluster"):
        return connect(address)


def checked_user(user: str) -> str:
    return check_name("user", user)


def friendly_errors(command: F) -> F:
    """Turn the platform's own errors into a one-line `Error: ...` and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ClusterError, InvalidNameError, ValueError) as error:
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]
