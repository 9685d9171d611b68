"""`platform up` / `platform down`: the local Ray cluster with Serve."""

from __future__ import annotations

import json
from typing import Optional

import click

from tenantserve.platform.cluster import ray_cluster as cluster
from tenantserve.platform.core import settings
from tenantserve.platform.store.registry import Registry

from .common import bootstrap_admin, console, friendly_errors, restore_registered_apps


@click.command()
@click.option("--port", "ray_port", default=cluster.DEFAULT_RAY_PORT, show_default=True, help="Ray head (GCS) port.")
@click.option("--host", "http_host", default="127.0.0.1", show_default=True, help="HTTP address apps are served on.")
@click.option("--http-port", default=cluster.DEFAULT_HTTP_PORT, show_default=True, help="HTTP port apps are served on.")
@click.option("--dashboard-port", default=cluster.DEFAULT_DASHBOARD_PORT, show_default=True)
@click.option("--metrics-port", type=int, default=None,
              help="Port of this node's Prometheus endpoint (default: a free port, printed).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate (PEM); needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The certificate's private key (PEM).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The CA that signed --tls-cert, for the CLI to verify it (default: the certificate itself).")
@click.option("--ingress", type=click.Choice(["auto", "haproxy", "proxy"]), default="auto", show_default=True,
              help="What answers on the HTTP port: Serve's HAProxy ingress (auto: when HAProxy is installed; "
                   "it terminates TLS too) or Serve's Python proxy.")
@click.option("--num-cpus", type=float, default=None, help="CPUs this node offers (default: all).")
@click.option("--num-gpus", type=int, default=None, help="GPUs this node offers (default: detected).")
@click.option("--resources", default=None, help='Extra node resources as JSON, e.g. \'{"accelerator_type:A100": 1}\'.')
@click.option("--address", default=None,
              help="Run the platform on this Ray cluster (`auto` on its head node) instead of starting one here.")
@friendly_errors
def up(
    address: Optional[str], ray_port: int, http_host: str, http_port: int, dashboard_port: int, metrics_port: Optional[int],
    tls_cert: Optional[str], tls_key: Optional[str], tls_ca: Optional[str], ingress: str, num_cpus: Optional[float], num_gpus: Optional[int], resources: Optional[str],
) -> None:
    """Start a local Ray cluster with Serve (a no-op if one is running), or with --address
    bring the platform's services and registered apps up on a running cluster."""
    if address is not None:
        with console.status("Connecting to the Ray cluster"):
            info = cluster.attach(address)
        restore_registered_apps()
        bootstrap_admin(Registry())
        console.print(f"Platform up on the Ray cluster at {info.address}. HTTP: {info.http_url}")
        return
    if bool(tls_cert) != bool(tls_key):
        raise click.BadParameter("give both --tls-cert and --tls-key", param_hint="--tls-cert/--tls-key")
    try:
        extra = json.loads(resources) if resources else None
    except ValueError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--resources") from None
    with console.status("Starting Ray and Serve"):
        info = cluster.up(
            ray_port=ray_port, http_host=http_host, http_port=http_port, dashboard_port=dashboard_port,
            metrics_port=metrics_port, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca, num_cpus=num_cpus, num_gpus=num_gpus, resources=extra,
            ingress=ingress, warn=lambda line: console.print(line, style="yellow"),
        )
    if info.fresh:
        restore_registered_apps()
    bootstrap_admin(Registry())
    console.print(f"Platform up. Ray: {info.address}  HTTP: {info.http_url} ({info.ingress})")
    _say_how_runners_run()
    console.print(f"Ray dashboard: {info.dashboard_url}  Metrics (Prometheus): {info.metrics_url}")


def _say_how_runners_run() -> None:
    from tenantserve.adapters.fal import sandbox

    if sandbox.unsandboxed():
        console.print(f"warning: {settings.UNSANDBOXED.name} is set: apps' code runs without a sandbox "
                      "(one trusted team only)", style="yellow")
        return
    try:
        sandbox.check()
    except sandbox.SandboxUnavailable as error:
        console.print(f"warning: {error}; until then deploys fail", style="yellow")


@click.command()
@friendly_errors
def down() -> None:
    """Stop the local Ray cluster that `platform up` started."""
    with console.status("Stopping Serve and Ray"):
        stopped = cluster.down()
    console.print("Platform stopped." if stopped else "No local platform was running.")
