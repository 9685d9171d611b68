"""The repository layout never hides the standard library's `platform` module."""

import subprocess
import sys

from helpers import ROOT


def test_stdlib_platform_importable_from_repository_root() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == "Linux"


def test_console_script_and_package_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import tenantserve, tenantserve.cli.main; print(tenantserve.get_handle.__name__)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == "get_handle"


def test_platform_help_imports_neither_ray_nor_the_commands() -> None:
    """`platform --help` lists every command from the table in `cli/main.py` alone."""
    probe = ("import sys, time; started = time.perf_counter()\n"
             "from tenantserve.cli.main import cli\n"
             "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('took', time.perf_counter() - started)\n"
             "print('loaded', sorted({m.split('.')[0] for m in sys.modules if m.startswith(('ray', 'fal', 'sqlalchemy'))}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, check=True)
    assert "loaded []" in result.stdout, result.stdout
    for name in ("deploy", "apps", "logs", "status", "keys", "audit", "up"):
        assert f"\n  {name} " in result.stdout
    print(result.stdout.splitlines()[-2])  # the time, for the record (machines here are noisy)


def test_every_command_in_the_help_table_loads_under_its_name() -> None:
    from tenantserve.cli.main import COMMANDS, load_command

    for name in COMMANDS:
        assert load_command(name).name == name
