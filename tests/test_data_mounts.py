"""fal's data_mounts in the runner sandbox (no cluster): only the named folders of the
owner's /data are bound, and a link an app planted in /data cannot take a bind out of it."""

import os
import subprocess

import pytest

from tenantserve.adapters.fal import sandbox


def _mounts(tmp_path, data_paths):
    folders = {name: tmp_path / name for name in ("app", "scratch", "data", "sockets")}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    return sandbox.Mounts(**folders, data_paths=data_paths)


def test_a_runner_sees_only_its_data_mounts(tmp_path) -> None:
    mounts = _mounts(tmp_path, ["/data/.cache"])
    (mounts.data / "secret").write_text("not for this app")
    argv = sandbox.command(["sh", "-c", "ls -a /data; echo kept > /data/.cache/mine; cat /data/secret"], mounts,
                           {"PATH": "/usr/bin:/bin"})
    fds = sandbox.bound_fds(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, pass_fds=fds, timeout=60)
    finally:
        for fd in fds:
            os.close(fd)
    assert done.stdout.split() == [".", "..", ".cache"]
    assert "No such file" in done.stderr
    assert (mounts.data / ".cache" / "mine").read_text() == "kept\n"  # made where missing, written through


def test_a_link_planted_in_data_is_refused(tmp_path) -> None:
    mounts = _mounts(tmp_path, ["/data/models/x"])
    (tmp_path / "elsewhere").mkdir()
    (mounts.data / "models").symlink_to(tmp_path / "elsewhere")  # what another of the owner's runners could do
    with pytest.raises(sandbox.DataMountError, match="/data/models/x is not a folder of /data"):
        sandbox.command(["true"], mounts, {})
    assert not (tmp_path / "elsewhere" / "x").exists()


def test_a_runners_environment_stays_off_the_nodes_command_lines(tmp_path) -> None:
    """Secrets reach the runner's environment; `ps` on the node shows only `bwrap --args FD`."""
    mounts = _mounts(tmp_path, ["/data/.cache"])
    argv = sandbox.command(["sh", "-c", "echo $API_TOKEN; ls -a /data"], mounts,
                           {"PATH": "/usr/bin:/bin", "API_TOKEN": "s3cr3t"}, private=True)
    assert argv[1] == "--args" and argv[3] == "--" and "s3cr3t" not in " ".join(argv)
    fds = sandbox.bound_fds(argv)  # the arguments' descriptor and the data mount's
    try:
        done = subprocess.run(argv, capture_output=True, text=True, pass_fds=fds, timeout=60)
    finally:
        for fd in fds:
            os.close(fd)
    assert len(fds) == 2 and done.stdout.split() == ["s3cr3t", ".", "..", ".cache"], done.stderr
