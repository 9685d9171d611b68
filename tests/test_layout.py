"""The repository layout never hides the standard library's `platform` module."""

import subprocess
import sys

from conftest import ROOT


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
