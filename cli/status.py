"""`platform status`: nodes, GPUs by accelerator type, free resources, and every app."""

from __future__ import annotations

import json
from typing import Mapping

import click
from rich.table import Table

from tenantserve.platform.control.apps import AppStatus
from tenantserve.platform.control.status import NodeRow, PlatformStatus

from .client import ControlPlaneClient
from .common import console, friendly_errors, replicas_text


def _amount(resources: Mapping[str, float], name: str) -> float:
    return resources.get(name, 0) / (1 << 30) if name in ("memory", "object_store_memory") else resources.get(name, 0)


def _free_of_total(free: Mapping[str, float], total: Mapping[str, float], name: str, unit: str = "") -> str:
    if not total.get(name):
        return "-"
    return f"{_amount(free, name):.4g}/{_amount(total, name):.4g}{unit}"


def _why(app: AppStatus) -> str:
    """The reason a replica waits, else the last line of Serve's message (a traceback's error)."""
    lines = app.message.strip().splitlines()
    return app.waiting or (lines[-1] if lines else "")


def _print(status: PlatformStatus) -> None:
    console.print(f"Ray cluster {status.address}  HTTP {status.http_url}")
    console.print(f"Dashboard {status.dashboard_url or '-'}  Metrics {status.metrics_url or '-'}")
    nodes = Table("node", "address", "state", "CPU free/total", "GPU free/total", "accelerators", "memory free/total",
                  title="Nodes", title_justify="left")
    for node in status.nodes:
        state = ("ALIVE" if node.alive else "DEAD") + (" (head)" if node.head else "")
        nodes.add_row(
            node.id[:12], node.address, state, _free_of_total(node.free, node.total, "CPU"),
            _free_of_total(node.free, node.total, "GPU"), ", ".join(node.accelerators) or "-",
            _free_of_total(node.free, node.total, "memory", " GiB") if node.alive else "-",
        )
    console.print(nodes)
    for name, resources in status.node_groups.items():
        console.print(f"Autoscaler node group {name}: {', '.join(f'{k}={v:g}' for k, v in sorted(resources.items()))}")
    apps = Table("app", "state", "replicas", "machine", "nodes", "why not running / last error",
                 title="Apps", title_justify="left")
    for app in status.apps:
        replicas = replicas_text(app.replicas)
        where = ", ".join(sorted({node[:12] for node in app.nodes})) or "-"
        apps.add_row(f"{app.owner}/{app.name}", app.status, replicas, app.machine_type, where, _why(app))
    console.print(apps if status.apps else "No apps deployed.")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@friendly_errors
def status(as_json: bool) -> None:
    """Show the cluster (nodes, GPUs by accelerator type, free resources) and every app
    (state, replicas and their nodes, why one is not running). An admin sees every user's
    apps; a user sees their own."""
    current = ControlPlaneClient().call("GET", "/status")
    if as_json:
        click.echo(json.dumps(current, indent=2))
        return
    _print(PlatformStatus(**{**current, "nodes": [NodeRow(**node) for node in current["nodes"]],
                             "apps": [AppStatus(**app) for app in current["apps"]]}))
