"""`platform audit`: the control plane's record of who did what (admins)."""

from __future__ import annotations

import json
from typing import Optional

import click
from rich.table import Table

from .client import ControlPlaneClient
from .common import console, parse_since


@click.command()
@click.option("--since", default=None, help="Only entries this recent: an age (30m, 2h, 7d) or an ISO 8601 time.")
@click.option("--actor", default=None, help="Only what this user did.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True, help="The newest N entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit(since: Optional[str], actor: Optional[str], limit: int, as_json: bool) -> None:
    """Show the audit log: every control-plane action, who took it, with which key (admins only)."""
    moment = parse_since(since)
    query = {"limit": limit, **({"actor": actor} if actor else {}), **({"since": moment.isoformat()} if moment else {})}
    entries = ControlPlaneClient().call("GET", "/audit", params=query)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry))
        return
    table = Table("at (UTC)", "actor", "key", "action", "target", "detail")
    for e in entries:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
        table.add_row(e["at"][:19].replace("T", " "), e["actor"], (e["key_id"] or "-")[:8], e["action"], e["target"], detail)
    console.print(table)
