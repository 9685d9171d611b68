"""`platform runners ...`: one replica at a time, through the control-plane API."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import click

from .client import ControlPlaneClient, for_user
from .common import console, friendly_errors, user_option


@click.group("runners")
def runners_group() -> None:
    """Stop a runner (list them with `platform apps runners NAME`)."""


@runners_group.command("kill")
@click.argument("runner_id")
@user_option
@friendly_errors
def kill(runner_id: str, user: Optional[str]) -> None:
    """Stop a runner; its app starts another if it falls below min_concurrency."""
    stopped = ControlPlaneClient().call("DELETE", f"/runners/{quote(runner_id, safe='')}", params=for_user(user))
    console.print(f"Stopped runner {runner_id} of {stopped['app']}")
