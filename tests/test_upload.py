"""What `platform deploy` uploads and how the server reads it: in a sandboxed process of
its own, with no network and none of the host's files, never in the caller's process."""

from __future__ import annotations

import socket

import pytest

from tenantserve.adapters.fal.bundle import prepare
from tenantserve.adapters.fal.loader import AppLoadError
from tenantserve.adapters.fal.upload import AppUpload, collect, read_sandboxed, unpack

from helpers import APPS


def test_the_server_reads_what_the_client_would_have_deployed() -> None:
    upload = collect(f"{APPS}/local_modules.py::Shouter")
    assert any(path.startswith("helper_pkg/") for path in upload.files)
    bundle, plan = read_sandboxed(upload, owner="alice", app_name=None)
    local = prepare(f"{APPS}/local_modules.py::Shouter", owner="alice")
    assert bundle.revision == local.revision and bundle.source.filename == upload.filename
    assert plan["route"] == f"/alice/{local.app_name}" and plan["endpoints"]


def test_an_apps_top_level_runs_sandboxed_without_network_or_host_files(tmp_path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    secret = tmp_path / "platform-secret"
    secret.write_text("s3cret")
    app = tmp_path / "probe.py"
    app.write_text(f"""
import os, socket
import fal

if socket.gethostname() == "runner":
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
        network = "reached"
    except OSError:
        network = "none"
    raise RuntimeError(f"sandboxed: network {{network}}, host file {{os.path.exists({str(secret)!r})}}, pid {{os.getpid()}}")

class Probe(fal.App):
    @fal.endpoint("/")
    def run(self) -> dict:
        return {{}}
""")
    upload = collect(f"{app}::Probe")  # the caller's process runs the module as it is
    with pytest.raises(AppLoadError) as refused:
        read_sandboxed(upload, owner="alice", app_name=None)
    assert "sandboxed: network none, host file False, pid 1" in str(refused.value)
    listener.close()


def test_uploads_stay_inside_their_folder(tmp_path) -> None:
    for path in ("../escape.py", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(AppLoadError):
            unpack(AppUpload(filename="app.py", source="", files={path: ""}), tmp_path)
    assert unpack(AppUpload(filename="/x/../.hidden", source="x = 1"), tmp_path) == "app.py"
    assert (tmp_path / "app.py").read_text() == "x = 1"


def test_an_app_that_fails_to_load_says_why() -> None:
    upload = AppUpload(filename="broken.py", source="import fal\nraise ValueError('no model here')\n")
    with pytest.raises(AppLoadError, match="no model here"):
        read_sandboxed(upload, owner="alice", app_name=None)
    with pytest.raises(AppLoadError, match="app name"):
        read_sandboxed(collect(f"{APPS}/versioned.py::Versioned"), owner="alice", app_name="x /alice/priv")


def test_an_app_that_rewrites_what_the_reader_says_stays_its_owners() -> None:
    """The reader runs the tenant's module: what it prints decides nothing about whose app it is."""
    bundle, plan = read_sandboxed(collect(f"{APPS}/forger.py::Forger"), owner="alice", app_name=None)
    assert bundle.owner == "alice" and plan["owner"] == "alice" and plan["route"] == "/alice/forger"
