"""`platform run` serves an ephemeral app until Ctrl-C, then removes it."""

import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import APPS, laptop_cli, laptop_env


def test_run_serves_until_interrupted(cluster, http, keys, tmp_path) -> None:
    """As a user whose shell holds only the platform's URL and a key."""
    exe = shutil.which("platform") or str(Path(sys.executable).parent / "platform")
    proc = subprocess.Popen(
        [exe, "run", f"{APPS}/versioned.py::Versioned"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=laptop_env(cluster["http_url"], keys["mia"], tmp_path),
    )
    try:
        url = None
        deadline = time.monotonic() + 120
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"Access your exposed service at (\S+)", line)
            url = match.group(1) if match else None
        assert url, "".join(lines)
        assert re.fullmatch(r".*/mia/versioned-[0-9a-f]{6}", url)
        assert http.post(url + "/").json() == {"version": "v1", "calls": 1}
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "Removed mia/versioned-" in output
    deadline = time.monotonic() + 30
    while http.post(url + "/").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert http.post(url + "/").status_code == 404


def test_deploy_from_another_machine_by_url(cluster, http, keys, tmp_path) -> None:
    """A CLI on a machine that never ran `platform up` reaches the platform through
    TENANTSERVE_URL alone (no database URL, no Ray address), acting as the user its key belongs to."""
    platform = laptop_cli(laptop_env(cluster["http_url"], keys["remote"], tmp_path / "elsewhere"))
    deployed = platform("deploy", f"{APPS}/async_setup.py::AsyncLoader", "--app-name", "far", "--auth", "shared")
    assert f"{cluster['http_url']}/remote/far" in deployed
    assert http.post("/remote/far/").status_code == 401
    answer = http.post("/remote/far/", headers={"Authorization": f"Key {keys['mia']}"})
    assert answer.json()["model"] == "loaded asynchronously"


LIVE = '''import fal

VERSION = "{version}"


class Live(fal.App):
    machine_type = "XS"

    def setup(self) -> None:
        if {fail}:
            raise RuntimeError("broken on purpose")

    @fal.endpoint("/")
    def answer(self) -> dict:
        print(f"answering {{VERSION}}")
        return {{"version": VERSION}}
'''


def test_run_reload_deploys_each_change_and_shows_the_apps_logs(cluster, http, keys, tmp_path) -> None:
    """fal run's developer loop: live logs, a changed file redeploys at the same URL, and a
    change that breaks setup() says so while the last good version keeps serving."""
    app = tmp_path / "project" / "live.py"
    app.parent.mkdir()
    app.write_text(LIVE.format(version="v1", fail=False))
    exe = shutil.which("platform") or str(Path(sys.executable).parent / "platform")
    proc = subprocess.Popen([exe, "run", "--reload", f"{app}::Live"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=laptop_env(cluster["http_url"], keys["mia"], tmp_path))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()

    def printed(pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, "".join(lines))
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in:\n{''.join(lines)}")

    def version(url: str) -> str:
        return http.post(url + "/").json()["version"]

    try:
        url = printed(r"Access your exposed service at (\S+)").group(1)
        assert version(url) == "v1"
        printed("answering v1")  # the app's own print, as it runs
        app.write_text(LIVE.format(version="v2", fail=False))
        printed(r"Reloaded \(revision")
        assert version(url) == "v2"
        app.write_text(LIVE.format(version="v3", fail=True))
        printed("keeping revision [0-9a-f]+ serving", timeout=300)
        assert "broken on purpose" in "".join(lines)
        assert version(url) == "v2"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0, "".join(lines)
    printed("Removed mia/live-")
