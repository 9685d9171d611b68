"""`platform apps ...`: the caller's deployed apps."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Optional

import click
from rich.table import Table

from tenantserve.adapters.fal.options import AppOptions
from tenantserve.platform import apps as platform_apps
from tenantserve.platform.naming import check_name
from tenantserve.platform.registry import Registry
from tenantserve.platform.logs import read_logs
from tenantserve.platform.runners import list_runners

from .common import acting_user, address_option, caller, connect_cluster, console, friendly_errors, user_option
from .deploy import deploy_bundle as _deploy_bundle


@click.group("apps")
def apps_group() -> None:
    """List and delete deployed apps."""


@apps_group.command("list")
@user_option
@click.option("--all-users", is_flag=True, help="List every user's apps.")
@address_option
@friendly_errors
def list_(user: Optional[str], all_users: bool, address: Optional[str]) -> None:
    """List apps with their state, replicas and URL."""
    registry = Registry()
    if all_users and not caller(registry).admin:
        raise click.ClickException("--all-users needs an admin key")
    owner = None if all_users else acting_user(registry, user)
    cluster = connect_cluster(address)
    rows = platform_apps.list_apps(cluster.http_url, registry, owner=owner)
    table = Table("app", "revision", "auth", "state", "replicas", "url")
    for row in rows:
        replicas = ", ".join(f"{n} {s.lower()}" for s, n in sorted(row.replicas.items())) or "0"
        table.add_row(f"{row.owner}/{row.name}", row.revision or "", row.auth, row.status, replicas, row.url)
    console.print(table if rows else "No apps deployed.")


@apps_group.command("delete")
@click.argument("name")
@user_option
@address_option
@friendly_errors
def delete(name: str, user: Optional[str], address: Optional[str]) -> None:
    """Delete an app (NAME, or USER/NAME for an admin)."""
    registry = Registry()
    owner, app = _app_ref(registry, name, user)
    connect_cluster(address)
    if not platform_apps.delete(owner, app, registry):
        raise click.ClickException(f"no app {owner}/{app}")
    console.print(f"Deleted {owner}/{app}")


@apps_group.command("list-rev")
@click.argument("name")
@user_option
@friendly_errors
def list_revisions(name: str, user: Optional[str]) -> None:
    """List an app's revisions, oldest first; `*` marks the serving one."""
    registry = Registry()
    owner, app = _own_app(registry, name, user)
    current = registry.get(owner, app)
    table = Table("", "revision", "created", "class", "machine", "min/max", "keep_alive", "auth")
    for revision, created, bundle in registry.revisions(owner, app):
        options = bundle.options
        table.add_row(
            "*" if current and current.revision == revision else "", revision, f"{created:%Y-%m-%d %H:%M:%S}",
            bundle.source.class_name, str(options.machine_type),
            f"{options.min_concurrency}/{options.max_concurrency}", f"{options.keep_alive:g}s", options.app_auth,
        )
    console.print(table)


@apps_group.command("set-rev")
@click.argument("name")
@click.argument("revision")
@user_option
@address_option
@friendly_errors
def set_revision(name: str, revision: str, user: Optional[str], address: Optional[str]) -> None:
    """Serve an earlier (or later) revision of an app: a rollback."""
    registry = Registry()
    owner, app = _own_app(registry, name, user)
    match = [b for rev, _, b in registry.revisions(owner, app) if rev.startswith(revision)]
    if len(match) != 1:
        raise click.ClickException(f"{owner}/{app} has {'no' if not match else 'several'} revision(s) {revision!r}")
    cluster = connect_cluster(address)
    _deploy_bundle(match[0], cluster.http_url, registry)
    console.print(f"{owner}/{app} now serves revision {match[0].revision}")


@apps_group.command("scale")
@click.argument("name")
@click.option("--keep-alive", type=click.FloatRange(min=0), default=None, help="Seconds a replica stays warm.")
@click.option("--min-concurrency", type=click.IntRange(min=0), default=None, help="Fewest replicas (0 = scale to zero).")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=None, help="Most replicas.")
@click.option("--max-multiplexing", type=click.IntRange(min=1), default=None, help="Requests one replica serves at once.")
@user_option
@address_option
@friendly_errors
def scale(name: str, keep_alive: Optional[float], min_concurrency: Optional[int], max_concurrency: Optional[int],
          max_multiplexing: Optional[int], user: Optional[str], address: Optional[str]) -> None:
    """Change a running app's autoscaling without redeploying its code (its replicas keep running)."""
    registry = Registry()
    owner, app = _own_app(registry, name, user)
    bundle = registry.get(owner, app)
    changes = {k: v for k, v in {
        "keep_alive": keep_alive, "min_concurrency": min_concurrency,
        "max_concurrency": max_concurrency, "max_multiplexing": max_multiplexing,
    }.items() if v is not None}
    if not changes:
        raise click.ClickException("nothing to change: give --keep-alive, --min-concurrency, --max-concurrency or --max-multiplexing")
    options = AppOptions(**{**bundle.options.model_dump(), **changes})
    cluster = connect_cluster(address)
    scaled = replace(bundle, options=options)
    _deploy_bundle(scaled, cluster.http_url, registry)
    console.print(f"{owner}/{app} scaled: " + ", ".join(f"{k}={v}" for k, v in changes.items())
                  + f" (revision {scaled.revision})")


def _app_ref(registry: Registry, name: str, user: Optional[str]) -> tuple[str, str]:
    """`NAME` (the caller's, or --user's) or `USER/NAME`, checked against what the caller may act as."""
    owner, _, app = name.rpartition("/")
    return acting_user(registry, owner or user), check_name("app", app)


def _own_app(registry: Registry, name: str, user: Optional[str]) -> tuple[str, str]:
    owner, app = _app_ref(registry, name, user)
    if registry.get(owner, app) is None:
        raise click.ClickException(f"no app {owner}/{app}")
    return owner, app


@apps_group.command("runners")
@click.argument("name")
@user_option
@address_option
@friendly_errors
def runners(name: str, user: Optional[str], address: Optional[str]) -> None:
    """List an app's runners (replicas): id, state, node, pid, uptime."""
    registry = Registry()
    owner, app = _own_app(registry, name, user)
    connect_cluster(address)
    table = Table("runner", "state", "node", "pid", "uptime")
    for runner in list_runners(owner, app):
        uptime = f"{runner.uptime_s:.0f}s" if runner.uptime_s is not None else "?"
        node = runner.node_id[:12] if runner.node_id else "(no node yet)"
        table.add_row(runner.id, runner.state, node, str(runner.pid) if runner.pid else "-", uptime)
    console.print(table)


def _since(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].isdigit():
        return datetime.now() - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use a duration such as 30s, 10m, 2h, or an ISO time", param_hint="--since") from None


@click.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--since", default=None, help="Only lines newer than this: 30s, 10m, 2h, or an ISO time.")
@click.option("--request", "request_id", default=None, help="Only lines of this request id.")
@user_option
@address_option
@friendly_errors
def logs(name: str, follow: bool, since: Optional[str], request_id: Optional[str], user: Optional[str],
         address: Optional[str]) -> None:
    """Print an app's replica logs (prints, warnings, tracebacks), each with its replica and time."""
    registry = Registry()
    owner, app = _own_app(registry, name, user)
    connect_cluster(address)
    start, printed = _since(since), 0
    while True:
        lines = read_logs(owner, app, since=start, request_id=request_id)
        for line in lines[printed:]:
            console.print(line.render(), markup=False)
        printed = len(lines)
        if not follow:
            break
        time.sleep(1)
