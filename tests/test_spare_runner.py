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
from tenantserve.adapters.fal.supervisor import APP_SOCKET, Launch, Runner, SetupFailed
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


def _claim(spare: spare_runner.Spare, source: str, class_name: str, owner_data: Path, uid: Optional[int],
           lines: list[str]) -> Runner:
    """What the replica does with its worker's warm spare, up to the claim: the runner that
    `start(..., spare=...)` then waits for."""
    mounts = spare.mounts
    (mounts.app / "modules").mkdir()
    seen = mounts.seen()
    spec = {"filename": "/apps/app.py", "source": source, "module_name": "app", "class_name": class_name,
            "socket": str(seen.sockets / APP_SOCKET), "sys_path": [str(seen.app / "modules")]}
    (mounts.app / "spec.json").write_text(json.dumps(spec))
    env = {**sandbox.base_env(sys.executable, seen), "MY_SECRET": "only-mine",
           "TENANTSERVE_MODEL_CACHE": str(owner_data if sandbox.unsandboxed() else seen.data)}
    runner = Runner(Launch(lambda fd: [], mounts.sockets, sandboxed=not sandbox.unsandboxed()),
                    lambda r, s, m: lines.append(m))
    if uid is not None:
        for folder in (mounts.scratch, mounts.sockets):
            os.chown(folder, uid, uid)
    spare.claim(seen.app / "spec.json", env, uid, owner_data)
    return runner


def _claim_and_call(spare: spare_runner.Spare, owner_data: Path, uid: Optional[int]) -> dict:
    """The app's answer, from a claimed spare."""
    lines: list[str] = []
    assert spare.until_warm(60)

    async def run() -> dict:
        runner = _claim(spare, APP, "Who", owner_data, uid, lines)
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
    made = ("from tenantserve.adapters.fal import spare_runner; f = spare_runner.worker_folder(); "
            "f.mkdir(parents=True); print(f, flush=True)")
    live = subprocess.Popen([sys.executable, "-c", made + "; import time; time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    gone = Path(subprocess.run([sys.executable, "-c", made], capture_output=True, text=True, check=True).stdout.strip())
    (gone / "data").mkdir()
    subprocess.run(["mount", "--bind", str(owner_data), str(gone / "data")], check=True)
    # A folder left by an earlier process whose pid a live one has now (pids come round).
    reused = spare_runner.ROOT / f"worker-{live.pid}-1"
    reused.mkdir(parents=True)
    try:
        kept = Path(live.stdout.readline().strip())
        spare_runner.sweep()
        assert not gone.exists() and not reused.exists()
        assert kept.exists()  # a live worker's
        assert (owner_data / "weights.bin").read_bytes() == b"w"
    finally:
        live.kill()
        live.wait()
    spare_runner.sweep()
    assert not kept.exists()


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


SLOW_SETUP = """
import time
import fal

class Slow(fal.App):
    def setup(self) -> None:
        print("loading the weights", flush=True)
        time.sleep(600)

    @fal.endpoint("/")
    def answer(self) -> dict:
        return {}
"""


def test_a_runner_that_hangs_in_setup_says_where(tmp_path) -> None:
    """What a replica still starting after a minute logs: the runner's state and user, its
    socket, and its Python threads' stacks in its output."""
    lines: list[str] = []
    spare_runner.start()
    spare = spare_runner.take()
    assert spare is not None and spare.until_warm(60)
    uid = settings.RUNNER_UID_BASE.value() + 4243

    async def run() -> str:
        runner = _claim(spare, SLOW_SETUP, "Slow", tmp_path, uid, lines)
        starting = asyncio.ensure_future(runner.start(60, spare=(spare.process, spare.pid)))
        try:
            while "loading the weights" not in lines:
                assert not starting.done(), lines
                await asyncio.sleep(0.05)
            report = runner.hang_report()
            while not any("in setup" in line for line in lines):
                await asyncio.sleep(0.05)
            return report
        finally:
            starting.cancel()
            await runner.stop(grace=1)

    report = asyncio.run(asyncio.wait_for(run(), 60))
    assert f"uid {uid}" in report and "state S" in report
    assert "its socket not made, in a folder that is the replica's" in report and "stacks follow" in report
    assert any(line.strip() == 'File "/apps/app.py", line 8 in setup' for line in lines), lines
    spare_runner.remove_folder(spare.folder)


def test_a_runner_whose_socket_folder_was_replaced_fails_its_start_at_once(tmp_path) -> None:
    """A runner that made its socket where the replica no longer looks (its folder was
    removed and made again after the runner started) fails the start in seconds, instead
    of leaving the replica waiting for startup_timeout."""
    lines: list[str] = []
    spare_runner.start()
    spare = spare_runner.take()
    assert spare is not None and spare.until_warm(60)
    spare.mounts.sockets.rename(tmp_path / "old-sockets")
    spare.mounts.sockets.mkdir()

    async def run() -> None:
        runner = _claim(spare, APP, "Who", tmp_path, None, lines)
        try:
            with pytest.raises(SetupFailed, match="socket folder was replaced"):
                await runner.start(60, spare=(spare.process, spare.pid))
        finally:
            await runner.stop(grace=1)

    started = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - started < 30
    spare_runner.remove_folder(spare.folder)


def test_a_spare_that_is_ready_before_its_replica_waits_is_taken_as_ready(tmp_path) -> None:
    """A quick app on a warm spare can bind its socket before the replica starts waiting
    for it (a busy node delays the replica's thread): the replica takes that socket."""
    lines: list[str] = []
    spare_runner.start()
    spare = spare_runner.take()
    assert spare is not None and spare.until_warm(60)

    async def run() -> int:
        runner = _claim(spare, APP, "Who", tmp_path, None, lines)
        try:
            deadline = time.monotonic() + 60
            while not runner.socket.exists():
                assert time.monotonic() < deadline, lines
                await asyncio.sleep(0.01)
            await runner.start(30, spare=(spare.process, spare.pid))
            async with runner.client.post("http://runner/", json={}) as answer:
                return answer.status
        finally:
            await runner.stop(grace=1)

    assert asyncio.run(run()) == 200
    spare_runner.remove_folder(spare.folder)
