"""`platform runners ...`: one replica at a time."""

from __future__ import annotations

from typing import Optional

import click

from tenantserve.platform.registry import Registry
from tenantserve.platform.runners import RunnerError, kill_runner

from .common import acting_user, address_option, connect_cluster, console, friendly_errors, user_option


@click.group("runners")
def runners_group() -> None:
    """Stop a runner (list them with `platform apps runners NAME`)."""


@runners_group.command("kill")
@click.argument("runner_id")
@user_option
@address_option
@friendly_errors
def kill(runner_id: str, user: Optional[str], address: Optional[str]) -> None:
    """Stop a runner; its app starts another if it falls below min_concurrency."""
    owner = acting_user(Registry(), user)
    connect_cluster(address)
    try:
        app = kill_runner(owner, runner_id)
    except RunnerError as error:
        raise click.ClickException(str(error)) from None
    console.print(f"Stopped runner {runner_id} of {app}")
