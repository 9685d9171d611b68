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


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user takes root")
def test_giving_an_owners_data_to_its_user_follows_no_link_out_of_it(tmp_path) -> None:
    """The owner's runners write in /data while another of its replicas starts and gives
    /data to the owner's user: a link planted there does not carry that elsewhere."""
    from tenantserve.adapters.fal.replica import _chown_tree

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (data / "models").mkdir(parents=True)
    (data / "models" / "weights.bin").write_bytes(b"w")
    elsewhere.mkdir()
    (elsewhere / "platform.key").write_text("not the tenant's")
    (data / "link").symlink_to(elsewhere)
    (data / "models" / "file-link").symlink_to(elsewhere / "platform.key")
    _chown_tree(data, 200123)
    for path in (data, data / "models", data / "models" / "weights.bin"):
        assert path.stat().st_uid == 200123
    assert os.lstat(data / "link").st_uid == 200123  # the link itself, harmless
    assert elsewhere.stat().st_uid == 0 and (elsewhere / "platform.key").stat().st_uid == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="runners switch users only where the platform is root")
def test_nothing_of_the_apps_environment_picks_what_runs_as_root(tmp_path) -> None:
    """A secret named PATH (or a package's script named setpriv) must not choose the program
    that switches to the owner's user: it runs as root with the capabilities that takes."""
    mounts = _mounts(tmp_path, None)
    trap = mounts.data / "bin"
    trap.mkdir()
    (trap / "setpriv").write_text("#!/bin/sh\ntouch /data/ran-as-root\nexec /usr/bin/setpriv \"$@\"\n")
    (trap / "setpriv").chmod(0o755)
    env = {"PATH": "/data/bin:/usr/bin:/bin", "LD_PRELOAD": "/data/bin/nothing.so", "SECRET": "s3cr3t"}
    argv = sandbox.command(["sh", "-c", "id -u; echo $SECRET"], mounts, env, uid=200321)
    options = argv[:argv.index("--")]
    assert "--setenv" not in options  # bubblewrap (and what it starts as root) gets none of it
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["200321", "s3cr3t"], done.stderr
    assert not (mounts.data / "ran-as-root").exists()
