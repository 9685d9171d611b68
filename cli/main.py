"""The `platform` command. Subcommands are imported when they run, not for `--help`:
each names its module here, with the one-line help that `platform --help` prints."""

from __future__ import annotations

import importlib
import os
from typing import Optional

import click

from tenantserve.platform.core import settings

# name: (module in this package, attribute, the command's one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "apps": ("apps", "apps_group", "List and delete deployed apps."),
    "audit": ("audit", "audit", "Show the audit log: every control-plane action, who took it, with which key (admins only)."),
    "deploy": ("deploy", "deploy", "Deploy an App class; wait until it answers and print its URL."),
    "down": ("cluster", "down", "Stop the local Ray cluster that `platform up` started."),
    "keys": ("users", "keys_group", "Create, list and revoke your API keys."),
    "login": ("users", "login", "Save KEY (KEY_ID:KEY_SECRET) as this machine's credentials for the CLI."),
    "logs": ("apps", "logs", "Print an app's replica logs (prints, warnings, tracebacks), each with its replica and time."),
    "run": ("deploy", "run", "Serve an App class, public, until Ctrl-C, then remove it."),
    "runners": ("runners", "runners_group", "Stop a runner (list them with `platform apps runners NAME`)."),
    "secrets": ("secrets", "secrets_group", "Set, list and unset your secrets (encrypted at rest; replicas get them as environment variables)."),
    "status": ("status", "status", "Show the cluster (nodes, GPUs by accelerator type, free resources) and every app."),
    "up": ("cluster", "up", "Start a local Ray cluster with Serve, or bring the platform up on a running one."),
    "users": ("users", "users_group", "Create and list users (admin only)."),
    "whoami": ("users", "whoami", "Print the user your API key belongs to."),
}


def load_command(name: str) -> click.Command:
    module, attribute, _ = COMMANDS[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), attribute)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        width = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.utils.make_default_short_help(help_text, width)) for name, (_, _, help_text)
                in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tenantserve")
@click.option("--db", envvar=settings.DB.name, default=None, metavar="URL",
              help="The registry's SQLAlchemy URL (default: SQLite in the state directory).")
def cli(db: Optional[str]) -> None:
    """tenantserve: run fal App classes on your own Ray cluster."""
    if db:
        os.environ[settings.DB.name] = db


if __name__ == "__main__":
    cli()
