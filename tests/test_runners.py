"""Each app's code runs in its own sandboxed runner, served by fal's SDK: what a tenant's
code can reach, what a crash or a hang costs, and packages the platform does not share."""

import os
import time
from pathlib import Path

from helpers import APPS, deployed, wait_until


def test_a_tenants_code_reaches_only_its_own_sandbox(cli, http, cluster) -> None:
    assert cli("secrets", "set", "SNOOP_SECRET=tina-only", as_user="tina").exit_code == 0
    assert cli("secrets", "set", "OTHER_SECRET=alice-only", as_user="alice").exit_code == 0
    deployed(cli, f"{APPS}/snoop.py::Snoop", "--user", "tina")
    home = os.environ["TENANTSERVE_HOME"]
    found = http.post("/tina/snoop/", params={"home": home, "ray_temp": cluster["temp_dir"]}).json()
    assert found["platform_files"] == []  # no registry, secret key, credentials or file store
    assert found["ray_files"] == []  # no Ray session directory or token
    assert found["reached_ray"] is False
    assert len(found["pids"]) <= 3, found["pids"]  # its own PID namespace: itself and its sandbox
    assert found["secret"] == "tina-only"  # the owner's secrets, as environment variables
    assert "OTHER_SECRET" not in found["environment"] and "RAY_ADDRESS" not in found["environment"]
    assert not [name for name in found["environment"] if name.startswith("RAY_")], found["environment"]
    assert found["data_writable"] is True  # its owner's area of the model cache

    # Each owner's runners run as that owner's own OS user, where the node can switch users.
    deployed(cli, f"{APPS}/snoop.py::Snoop", "--user", "alice")
    other = http.post("/alice/snoop/", params={"home": home, "ray_temp": cluster["temp_dir"]}).json()
    if os.geteuid() == 0:
        assert 0 not in (found["uid"], other["uid"]) and found["uid"] != other["uid"]
        assert found["data_owner"] == found["uid"] and found["gid"] == found["uid"] and found["groups"] == []
        assert found["capabilities"] == other["capabilities"] == 0
    else:  # a replica that is not root cannot switch users: its runners run as its own
        assert found["uid"] == other["uid"] == os.getuid()
    cli("apps", "delete", "snoop", "--user", "alice")


def test_a_crash_costs_one_request_and_the_runner_comes_back(cli, http) -> None:
    deployed(cli, f"{APPS}/crashy.py::Crashy", "--user", "uma")
    first = http.post("/uma/crashy/").json()["started"]

    died = http.post("/uma/crashy/exit")
    assert died.status_code == 503 and "exited with code 3" in died.json()["detail"], died.text
    second = wait_until(lambda: (r := http.post("/uma/crashy/")).status_code == 200 and r.json()["started"],
                        "the runner to come back", timeout=30, every=0.2)
    assert second > first  # setup() ran again, without a redeploy

    crashed = http.post("/uma/crashy/segfault")
    assert crashed.status_code == 503 and "SIGSEGV" in crashed.json()["detail"], crashed.text
    wait_until(lambda: http.post("/uma/crashy/").status_code == 200, "the runner to come back", timeout=30, every=0.2)


def test_a_request_past_its_timeout_stops_its_work(cli, http) -> None:
    deployed(cli, f"{APPS}/crashy.py::Crashy", "--user", "uma")
    marker = Path(os.environ["TENANTSERVE_HOME"]) / "cache" / "users" / "uma" / "hang-finished"
    started = time.monotonic()
    hung = http.post("/uma/crashy/hang")
    assert hung.status_code == 504 and time.monotonic() - started < 5
    wait_until(lambda: http.post("/uma/crashy/").status_code == 200, "the runner to come back", timeout=30, every=0.2)
    time.sleep(5)
    assert not marker.exists()  # the sync endpoint did not run on after its 504


def test_an_app_pins_a_package_the_platform_has_at_another_version(cli, http) -> None:
    import numpy

    assert numpy.__version__ != "1.26.4"
    deployed(cli, f"{APPS}/pinned.py::Pinned", "--user", "tina")
    answer = http.post("/tina/pinned/").json()
    assert answer["numpy"] == "1.26.4" and "/envs/" in answer["file"]
