"""`platform deploy --dry-run`: an app checked and planned as a deploy would, with no
cluster, no registry and nothing started (for an app repository's CI)."""

import json
import os
import subprocess
import sys

import pytest

from helpers import APPS


def _dry_run(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    """In a process of its own, as CI would run it: nothing of the test session's around."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TENANTSERVE_HOME": str(tmp_path / "home"),
           "RAY_ENABLE_AUTO_CONNECT": "0", "TENANTSERVE_USER": "ci"}
    return subprocess.run([sys.executable, "-m", "tenantserve.cli.main", "deploy", "--dry-run", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path) -> None:
    done = _dry_run(tmp_path, f"{APPS}/gpu.py::GpuApp", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["owner"], found["app"], found["route"], found["auth"]) == ("ci", "gpu-app", "/ci/gpu-app", "private")
    assert found["resources"]["GPU-A100"] == {"CPU": 1.0, "GPU": 1.0, "accelerator_type:A100": 0.001}
    assert found["autoscaling"]["downscale_delay_s"] == 30 and found["autoscaling"]["initial_replicas"] == 1
    assert [e["path"] for e in found["endpoints"]] == ["/"]
    assert "/" in found["openapi"]["paths"] and found["openapi"]["info"]["title"] == "ci/gpu-app"
    home = tmp_path / "home"
    assert not (home / "cluster.json").exists() and not (home / "registry.db").exists()
    assert not list((tmp_path).glob("**/session_*"))


def test_dry_run_in_words(tmp_path) -> None:
    done = _dry_run(tmp_path, f"{APPS}/streaming.py::Talker", "--app-name", "talker", "--auth", "public")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "Would deploy ci/talker" in text and "auth public" in text and "stream" in text
    assert "machine XS: each replica takes CPU=0.1" in text


def test_dry_run_of_a_container_app_names_its_base_image_and_context(tmp_path) -> None:
    done = _dry_run(tmp_path, f"{APPS}/container/app.py::FromImage")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "container image: built on the node from tenantserve-test-base, 1 context file(s)" in text


@pytest.mark.parametrize("ref, extra, reason", [
    (f"{APPS}/bad_options.py::Typo", (), "did you mean 'keep_alive'"),
    (f"{APPS}/bad_options.py::BadMachine", (), "machine_type"),
    (f"{APPS}/versioned.py::Versioned", ("--app-name", "x /alice/priv"), "1-63 lowercase letters"),
    (f"{APPS}/versioned.py::NoSuchClass", (), "NoSuchClass"),
    (f"{APPS}/missing.py::App", (), "missing.py"),
    # A module beside the app that does not ship: as the server and the replicas would read it.
    (f"{APPS}/sibling/app.py::Sibling", (), f"{APPS}/sibling/app.py: importing it failed: ModuleNotFoundError: "
                                            "No module named 'helper'"),
])
def test_dry_run_exits_1_with_the_reason(tmp_path, ref, extra, reason) -> None:
    done = _dry_run(tmp_path, ref, *extra)
    assert done.returncode == 1, done.stdout
    assert reason in " ".join(done.stderr.split()), done.stderr


def test_an_app_inside_a_package_ships_the_package(tmp_path) -> None:
    done = _dry_run(tmp_path, f"{APPS}/packaged/shop/serving/app.py::Shop")
    assert done.returncode == 0, done.stderr
    assert "local modules: 4 file(s)" in " ".join(done.stdout.split())  # shop/, from its top


def test_requirements_print_as_written(tmp_path) -> None:
    app = tmp_path / "extras.py"
    app.write_text("import fal\n\nclass Extras(fal.App):\n    requirements = ['misaki[en]==0.8.4', 'x[/y]']\n"
                   "    @fal.endpoint('/')\n    def run(self) -> dict:\n        return {}\n")
    done = _dry_run(tmp_path, f"{app}::Extras")
    assert done.returncode == 0, done.stderr
    assert "environment: misaki[en]==0.8.4, x[/y]" in " ".join(done.stdout.split())
