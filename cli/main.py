"""The `platform` command."""

from __future__ import annotations

import os
from typing import Optional

import click

from .apps import apps_group, logs
from .audit import audit
from .cluster import down, up
from .deploy import deploy, run
from .runners import runners_group
from .secrets import secrets_group
from .status import status
from .users import keys_group, login, users_group, whoami


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tenantserve")
@click.option("--db", envvar="TENANTSERVE_DB", default=None, metavar="URL",
              help="The registry's SQLAlchemy URL (default: SQLite in the state directory).")
def cli(db: Optional[str]) -> None:
    """tenantserve: run fal App classes on your own Ray cluster."""
    if db:
        os.environ["TENANTSERVE_DB"] = db


for command in (up, down, status, deploy, run, apps_group, logs, users_group, keys_group, secrets_group, runners_group, login, whoami, audit):
    cli.add_command(command)

if __name__ == "__main__":
    cli()
