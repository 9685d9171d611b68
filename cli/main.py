"""The `platform` command."""

from __future__ import annotations

import click

from .apps import apps_group
from .cluster import down, up
from .deploy import deploy, run
from .runners import runners_group
from .secrets import secrets_group
from .users import keys_group, login, users_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tenantserve")
def cli() -> None:
    """tenantserve: run fal App classes on your own Ray cluster."""


for command in (up, down, deploy, run, apps_group, users_group, keys_group, secrets_group, runners_group, login):
    cli.add_command(command)

if __name__ == "__main__":
    cli()
