"""A spare runner (fal imported, waiting in a Ray worker) becomes an app's runner when its
replica claims it: as the owner's OS user, with the owner's secrets and model cache and
nothing of the platform's; its folders go without touching the owner's files. No cluster:
the replica's side is driven here as the replica drives it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from tenantserve.adapters.fal import sandbox, spare_runner
from tenantserve.adapters.fal.supervisor import APP_SOCKET, Launch, Runner
from tenantserve.platform.core import settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or sandbox.bwrap() is None,
                                reason="spare runners need bubblewrap and a replica that runs as root")

APP = '''
import os
import fal

class Who(fal.App):
    def setup(self) -> None:
        print("set up as", os.getuid())

    @fal.endpoint("/")
    def who(self) -> dict:
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                "capabilities": int(status["CapEff"].strip(), 16),
                "data": sorted(os.listdir(os.environ["TENANTSERVE_MODEL_CACHE"])),
                "secret": os.environ.get("MY_SECRET"), "home": os.environ.get("HOME"),
                "tmp_writable": os.access("/tmp", os.W_OK)}
'''


def _claim_and_call(spare: spare_runner.Spare, owner_data: Path, uid: Optional[int]) -> dict:
    """What the replica does with its worker's spare; the app's answer."""
    mounts = spare.mounts
    (mounts.app / "modules").mkdir()
    seen = mounts.seen()
    spec = {"filename": "/apps/who.py", "source": APP, "module_name": "who", "class_name": "Who",
            "socket": str(seen.sockets / APP_SOCKET), "sys_path": [str(seen.app / "modules")]}
    (mounts.app / "spec.json").write_text(json.dumps(spec))
    env = {**sandbox.base_env(sys.executable, seen), "MY_SECRET": "only-mine",
           "TENANTSERVE_MODEL_CACHE": str(owner_data if sandbox.unsandboxed() else seen.data)}
    lines: list[str] = []

    async def run() -> dict:
        runner = Runner(Launch(lambda fd: [], mounts.sockets, sandboxed=not sandbox.unsandboxed()),
                        lambda r, s, m: lines.append(m))
        assert await asyncio.to_thread(spare.until_warm, 60)
        if uid is not None:
            for folder in (mounts.scratch, mounts.sockets):
                os.chown(folder, uid, uid)
        spare.claim(seen.app / "spec.json", env, uid, owner_data)
        try:
            await runner.start(60, spare=(spare.process, spare.pid))
            async with runner.client.post("http://runner/", json={}) as answer:
                assert answer.status == 200, await answer.text()
                return await answer.json()
        finally:
            await runner.stop()

    found = asyncio.run(run())
    assert f"set up as {os.getuid() if uid is None else uid}" in lines
    return found


def test_a_claimed_spare_runs_the_app_as_its_owner_and_leaves_the_owners_files(tmp_path) -> None:
    owner_data = tmp_path / "cache" / "users" / "vera"
    owner_data.mkdir(parents=True)
    (owner_data / "weights.bin").write_bytes(b"w")
    uid = settings.RUNNER_UID_BASE.value() + 4242
    os.chown(owner_data, uid, uid)

    spare_runner.start()
    spare = spare_runner.take()
    assert spare is not None and spare_runner.take() is None  # one claim per spare
    found = _claim_and_call(spare, owner_data, uid)

    assert (found["uid"], found["gid"], found["groups"]) == (uid, uid, [])
    assert found["capabilities"] == 0  # the two it kept to switch users are gone
    assert found["data"] == ["weights.bin"]  # the owner's model cache, bound after it started
    assert found["secret"] == "only-mine" and found["home"] == "/tmp" and found["tmp_writable"]

    spare_runner.remove_folder(spare.folder)
    assert not spare.folder.exists()
    assert (owner_data / "weights.bin").read_bytes() == b"w"  # unmounted first, never emptied
    assert str(spare.folder) not in Path("/proc/self/mountinfo").read_text()


def test_the_folders_of_a_killed_worker_are_swept_without_its_owners_files(tmp_path) -> None:
    owner_data = tmp_path / "owner"
    owner_data.mkdir()
    (owner_data / "weights.bin").write_bytes(b"w")
    gone = subprocess.Popen(["true"])
    gone.wait()
    folder = spare_runner.worker_folder(gone.pid)
    (folder / "data").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(owner_data), str(folder / "data")], check=True)

    spare_runner.sweep()
    assert not folder.exists()
    assert (owner_data / "weights.bin").read_bytes() == b"w"


def test_a_spare_that_ended_before_it_was_warm_is_given_up(tmp_path) -> None:
    spare_runner.start()
    spare = spare_runner.take()
    assert spare is not None
    os.kill(spare.pid, 9)
    started = time.monotonic()
    assert spare.until_warm(30) is False  # the replica starts a runner of its own instead
    assert time.monotonic() - started < 30 and spare.process.returncode is not None
    assert spare.folder.exists()  # the replica's by now: its spec and sockets are there
    spare_runner.remove_folder(spare.folder)


def test_with_the_sandbox_off_a_spare_serves_its_app_too(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(settings.UNSANDBOXED.name, "1")  # the operator's "one trusted team only" mode
    owner_data = tmp_path / "owner"
    owner_data.mkdir()
    (owner_data / "weights.bin").write_bytes(b"w")
    spare_runner.start()
    spare = spare_runner.take()
    assert spare is not None
    found = _claim_and_call(spare, owner_data, uid=None)
    assert found["secret"] == "only-mine" and found["data"] == ["weights.bin"]
    spare_runner.remove_folder(spare.folder)
    assert (owner_data / "weights.bin").exists()
