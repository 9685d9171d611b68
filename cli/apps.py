"""`platform apps ...` and `platform logs`: the caller's deployed apps, through the
control-plane API."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import click
from rich.table import Table

from .client import ControlPlaneClient, for_user
from .common import console, friendly_errors, parse_since, replicas_text, user_option
from .deploy import follow_deploy


@click.group("apps")
def apps_group() -> None:
    """List and delete deployed apps."""


@apps_group.command("list")
@user_option
@click.option("--all-users", is_flag=True, help="List every user's apps.")
@friendly_errors
def list_(user: Optional[str], all_users: bool) -> None:
    """List apps with their state, replicas and URL."""
    rows = ControlPlaneClient().call("GET", "/apps", params={**for_user(user), "all_users": all_users})
    table = Table("app", "revision", "auth", "state", "replicas", "url")
    for row in rows:
        table.add_row(f"{row['owner']}/{row['name']}", row["revision"] or "", row["auth"], row["status"],
                      replicas_text(row["replicas"]), row["url"])
    console.print(table if rows else "No apps deployed.")


@apps_group.command("delete")
@click.argument("name")
@user_option
@friendly_errors
def delete(name: str, user: Optional[str]) -> None:
    """Delete an app (NAME, or USER/NAME for an admin)."""
    client = ControlPlaneClient()
    path = client.app_path(name, user)
    client.call("DELETE", path)
    console.print(f"Deleted {path.removeprefix('/apps/')}")


@apps_group.command("list-rev")
@click.argument("name")
@user_option
@friendly_errors
def list_revisions(name: str, user: Optional[str]) -> None:
    """List an app's revisions, oldest first; `*` marks the serving one."""
    client = ControlPlaneClient()
    table = Table("", "revision", "created", "class", "machine", "min/max", "keep_alive", "auth")
    for row in client.call("GET", f"{client.app_path(name, user)}/revisions"):
        created = datetime.fromisoformat(row["created"])
        table.add_row("*" if row["serving"] else "", row["revision"], f"{created:%Y-%m-%d %H:%M:%S}", row["class"],
                      str(row["machine_type"]), f"{row['min_concurrency']}/{row['max_concurrency']}",
                      f"{row['keep_alive']:g}s", row["auth"])
    console.print(table)


@apps_group.command("set-rev")
@click.argument("name")
@click.argument("revision")
@user_option
@friendly_errors
def set_revision(name: str, revision: str, user: Optional[str]) -> None:
    """Serve an earlier (or later) revision of an app: a rollback."""
    client = ControlPlaneClient()
    done = follow_deploy(client.deploy_events("PUT", f"{client.app_path(name, user)}/revision", json={"revision": revision}),
                         name)
    console.print(f"{done['owner']}/{done['app']} now serves revision {done['revision']}")


@apps_group.command("scale")
@click.argument("name")
@click.option("--keep-alive", type=click.FloatRange(min=0), default=None, help="Seconds a replica stays warm.")
@click.option("--min-concurrency", type=click.IntRange(min=0), default=None, help="Fewest replicas (0 = scale to zero).")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=None, help="Most replicas.")
@click.option("--max-multiplexing", type=click.IntRange(min=1), default=None, help="Requests one replica serves at once.")
@user_option
@friendly_errors
def scale(name: str, keep_alive: Optional[float], min_concurrency: Optional[int], max_concurrency: Optional[int],
          max_multiplexing: Optional[int], user: Optional[str]) -> None:
    """Change a running app's autoscaling without redeploying its code (its replicas keep running)."""
    changes = {k: v for k, v in {
        "keep_alive": keep_alive, "min_concurrency": min_concurrency,
        "max_concurrency": max_concurrency, "max_multiplexing": max_multiplexing,
    }.items() if v is not None}
    client = ControlPlaneClient()  # it says when there is nothing to change
    done = follow_deploy(client.deploy_events("PATCH", f"{client.app_path(name, user)}/scaling", json=changes), name)
    console.print(f"{done['owner']}/{done['app']} scaled: " + ", ".join(f"{k}={v}" for k, v in changes.items())
                  + f" (revision {done['revision']})")


@apps_group.command("runners")
@click.argument("name")
@user_option
@friendly_errors
def runners(name: str, user: Optional[str]) -> None:
    """List an app's runners (replicas): id, state, node, pid, uptime."""
    client = ControlPlaneClient()
    table = Table("runner", "state", "node", "pid", "uptime")
    for runner in client.call("GET", f"{client.app_path(name, user)}/runners"):
        uptime = f"{runner['uptime_s']:.0f}s" if runner["uptime_s"] is not None else "?"
        node = runner["node_id"][:12] if runner["node_id"] else "(no node yet)"
        table.add_row(runner["id"], runner["state"], node, str(runner["pid"]) if runner["pid"] else "-", uptime)
    console.print(table)


@click.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--since", default=None, help="Only lines newer than this: 30s, 10m, 2h, or an ISO time.")
@click.option("--request", "request_id", default=None, help="Only lines of this request id.")
@user_option
@friendly_errors
def logs(name: str, follow: bool, since: Optional[str], request_id: Optional[str], user: Optional[str]) -> None:
    """Print an app's replica logs (prints, warnings, tracebacks), each with its replica and time."""
    client = ControlPlaneClient()
    start = parse_since(since)
    query = {"follow": follow, **({"since": start.isoformat()} if start else {}),
             **({"request_id": request_id} if request_id else {})}
    for event in client.stream("GET", f"{client.app_path(name, user)}/logs", params=query):
        console.print(event["line"], markup=False)
