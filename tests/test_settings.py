"""Every `TENANTSERVE_*` setting is defined once, read with its type, and documented
(no cluster)."""

from __future__ import annotations

import re
from pathlib import Path

from tenantserve.platform.core import settings

from helpers import ROOT


def test_the_configuration_page_lists_exactly_the_settings() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(TENANTSERVE_[A-Z_]+)`", page, flags=re.M))
    assert documented == set(settings.SETTINGS)


def test_no_module_reads_a_setting_of_its_own() -> None:
    """Settings are read through `core/settings.py`; the runner's variables (set by the
    platform for its runners, read inside the sandbox) are the only other ones."""
    strays = []
    for folder in ("platform", "adapters", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "settings.py":
                continue
            for name in re.findall(r"[\"'](TENANTSERVE_[A-Z_]+)[\"']", path.read_text()):
                if name not in settings.RUNNER_VARIABLES:
                    strays.append(f"{path.relative_to(ROOT)}: {name}")
    assert not strays, strays


def test_settings_read_their_type_and_fall_back_to_the_default(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TENANTSERVE_SPARE_WORKERS", "-3")
    assert settings.SPARE_WORKERS.value() == 0
    monkeypatch.setenv("TENANTSERVE_SPARE_WORKERS", "")
    assert settings.SPARE_WORKERS.value() == 1  # empty counts as unset
    monkeypatch.setenv("TENANTSERVE_AUDIT_DAYS", "0.5")
    assert settings.AUDIT_DAYS.value() == 0.5
    monkeypatch.setenv("TENANTSERVE_HOME", str(tmp_path / "home"))
    assert settings.state_dir() == tmp_path / "home" and (tmp_path / "home").is_dir()
    monkeypatch.delenv("TENANTSERVE_DB", raising=False)
    assert settings.DB.get() is None
    monkeypatch.setenv("TENANTSERVE_UNSANDBOXED", "0")
    assert settings.UNSANDBOXED.get() is False
