"""Per-app environments on top of the node's packages: no Ray cluster, only uv and the index."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tenantserve.platform.cluster import environments


@pytest.fixture(autouse=True)
def envs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "envs"
    monkeypatch.setenv("TENANTSERVE_ENVS", str(folder))
    return folder


def base_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_python(python: str, code: str) -> str:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def own_dists(venv: Path) -> set[str]:
    """The distributions in the venv's own site-packages, not the node's beneath it."""
    (site_packages,) = venv.glob("lib/python*/site-packages")
    return {dist.metadata["Name"].lower() for dist in importlib.metadata.distributions(path=[str(site_packages)])}


def test_requirements_the_node_satisfies_need_no_environment(envs: Path) -> None:
    lines: list[str] = []
    started = time.monotonic()
    python = environments.python_for(["pyyaml>=6", "click"], lines.append)
    assert time.monotonic() - started < 0.5
    assert python == sys.executable
    assert lines == ["requirements satisfied by the node's packages: pyyaml>=6, click"]
    assert not envs.exists() or not any(envs.iterdir())


def test_a_pin_that_conflicts_with_the_node_shadows_it(envs: Path) -> None:
    node = base_version("packaging")
    assert node is not None and node != "23.2"
    lines: list[str] = []
    python = environments.python_for(["packaging==23.2"], lines.append)
    assert python != sys.executable and Path(python).is_relative_to(envs)
    assert f"shadowing the node's packaging=={node}" in lines and " + packaging==23.2" in lines
    show = "import importlib.metadata as m, packaging; print(m.version('packaging'), packaging.__file__)"
    version, where = run_python(python, show).split()
    assert version == "23.2" and where.startswith(str(envs))
    assert run_python(sys.executable, show).split()[0] == node


def test_only_what_the_node_lacks_goes_into_the_environment(envs: Path) -> None:
    assert base_version("requests") and not base_version("requests-toolbelt")
    lines: list[str] = []
    python = environments.python_for(["requests-toolbelt"], lines.append)
    venv = Path(python).parent.parent
    assert own_dists(venv) == {"requests-toolbelt"}, "requests came again though the node has it"
    assert any(line.startswith(" + requests-toolbelt==") for line in lines)
    assert run_python(python, "import requests_toolbelt, requests; print(requests.__file__)").startswith(
        str(Path(importlib.metadata.distribution("requests").locate_file(""))))
    # Kept for next time, on this node: no uv, no second build.
    started = time.monotonic()
    assert environments.python_for(["requests-toolbelt"]) == python
    assert time.monotonic() - started < 0.5
    (installed,) = json.loads((venv / environments.READY).read_text())["installed"]
    assert installed.startswith("requests-toolbelt==")


def test_concurrent_builds_of_one_list_build_once(envs: Path) -> None:
    lines: list[str] = []
    folders: list[Path] = []
    threads = [threading.Thread(target=lambda: folders.append(environments.ensure(["humanize==4.9.0"], lines.append)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 1 and len(folders) == 3
    assert lines.count(" + humanize==4.9.0") == 1
    assert own_dists(folders[0]) == {"humanize"}


def test_a_requirement_that_cannot_resolve_fails_with_uvs_words_and_leaves_nothing(envs: Path) -> None:
    packages = ["humanize==4.9.0", "tenantserve-no-such-package"]
    with pytest.raises(environments.BuildError) as error:
        environments.python_for(packages)
    assert "tenantserve-no-such-package" in str(error.value) and "No solution found" in str(error.value)
    assert not (envs / environments.key(packages)).exists()
    assert not list(envs.glob(f"*/{environments.READY}"))


def test_a_package_that_must_be_built_from_source_is_refused_before_its_code_runs(tmp_path: Path) -> None:
    """Building a source distribution runs its setup code on the node, as the platform: wheels only."""
    project, marker = tmp_path / "builds-on-install", tmp_path / "setup-ran"
    project.mkdir()
    (project / "setup.py").write_text(
        f"from pathlib import Path\nfrom setuptools import setup\nPath({str(marker)!r}).write_text('ran')\n"
        "setup(name='tenantserve-builds-on-install', version='1.0')\n")
    with pytest.raises(environments.BuildError, match="(?i)build"):
        environments.python_for([f"tenantserve-builds-on-install @ {project.as_uri()}"])
    assert not marker.exists()
