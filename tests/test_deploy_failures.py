"""A deploy that fails says why, exits non-zero and leaves the app as it was."""

import time
from pathlib import Path

from helpers import APPS


def _versioned(tmp_path: Path, version: str, fail_setup: bool = False) -> str:
    text = (APPS / "versioned.py").read_text()
    text = text.replace('VERSION = "v1"', f'VERSION = "{version}"')
    text = text.replace("FAIL_SETUP = False", f"FAIL_SETUP = {fail_setup}")
    path = tmp_path / "versioned.py"
    path.write_text(text)
    return f"{path}::Versioned"


def test_failing_setup_on_first_deploy_leaves_nothing(cli, http, tmp_path) -> None:
    result = cli("deploy", _versioned(tmp_path, "v1", fail_setup=True), "--user", "frank", "--auth", "public")
    assert result.exit_code == 1
    assert "setup() failed in Versioned" in result.output
    assert "checkpoint file is corrupt" in result.output
    assert "versioned.py\", line" in result.output  # the user's own traceback
    assert http.post("/frank/versioned/").status_code == 404
    assert "frank/versioned" not in cli("apps", "list", "--user", "frank").output


def test_failing_redeploy_keeps_previous_revision_serving(cli, http, tmp_path) -> None:
    assert cli("deploy", _versioned(tmp_path, "v1"), "--user", "grace", "--auth", "public").exit_code == 0
    assert http.post("/grace/versioned/").json() == {"version": "v1", "calls": 1}

    failed = cli("deploy", _versioned(tmp_path, "v2", fail_setup=True), "--user", "grace", "--auth", "public")
    assert failed.exit_code == 1 and "checkpoint file is corrupt" in failed.output
    # Same replica, same state: the previous revision never stopped.
    assert http.post("/grace/versioned/").json() == {"version": "v1", "calls": 2}

    assert cli("deploy", _versioned(tmp_path, "v3"), "--user", "grace", "--auth", "public").exit_code == 0
    assert http.post("/grace/versioned/").json() == {"version": "v3", "calls": 1}


def test_a_setup_that_never_finishes_fails_the_deploy_with_its_last_output(cli, http) -> None:
    began = time.monotonic()
    result = cli("deploy", f"{APPS}/hangs.py::HangsInSetup", "--user", "frank", "--auth", "public")
    assert result.exit_code == 1 and "startup_timeout" in result.output
    assert "from a share that never answers" in result.output  # where it was when the deploy gave up
    assert time.monotonic() - began < 150
    assert http.post("/frank/hangs-in-setup/").status_code == 404


def test_redeploying_the_same_revision_keeps_replicas(cli, http, tmp_path) -> None:
    ref = _versioned(tmp_path, "same")
    assert cli("deploy", ref, "--user", "heidi", "--auth", "public").exit_code == 0
    assert http.post("/heidi/versioned/").json()["calls"] == 1
    assert cli("deploy", ref, "--user", "heidi", "--auth", "public").exit_code == 0
    assert http.post("/heidi/versioned/").json()["calls"] == 2


def test_bad_input_to_deploy(cli, tmp_path) -> None:
    missing = cli("deploy", str(tmp_path / "nope.py::App"))
    assert missing.exit_code != 0 and "no such file" in missing.output
    typo = cli("deploy", f"{APPS}/bad_options.py::Typo")
    assert typo.exit_code != 0 and "keep_alve" in typo.output
    bad_user = cli("deploy", f"{APPS}/versioned.py::Versioned", "--user", "../etc")
    assert bad_user.exit_code != 0 and "invalid user name" in bad_user.output
    unknown_user = cli("deploy", f"{APPS}/versioned.py::Versioned", "--user", "nobody-here")
    assert unknown_user.exit_code != 0 and "platform users create nobody-here" in unknown_user.output
