"""Deploy apps through the CLI and call them over HTTP, as a user would."""

import io
import os
import time
from pathlib import Path

from PIL import Image

from helpers import APPS, ROOT, deployed


def test_stateful_multi_endpoint_app(cli, http) -> None:
    result = deployed(cli, str(ROOT / "examples/counter.py::Counter"), "--user", "alice")
    assert "/alice/counter" in result.output
    first = http.post("/alice/counter/", json={"name": "ada"}).json()
    second = http.post("/alice/counter/", json={"name": "bob"}).json()
    assert first["message"] == "Hello, ada!"
    assert (first["calls"], second["calls"]) == (1, 2)  # state kept across calls
    assert second["setup_calls"] == 1 and second["replica_pid"] == first["replica_pid"]

    swatch = http.post("/alice/counter/swatch", json={"color": "#ff0000", "size": 24}).json()["image"]
    assert (swatch["width"], swatch["height"], swatch["content_type"]) == (24, 24, "image/png")
    png = http.get(swatch["url"]).content
    assert len(png) == swatch["file_size"]
    assert Image.open(io.BytesIO(png)).getpixel((0, 0)) == (255, 0, 0)

    assert http.get("/alice/counter/health").json()["status"] == "ok"
    spec = http.get("/alice/counter/openapi.json").json()
    assert {"/", "/swatch"} <= set(spec["paths"])  # fal's own app also lists its GET /health
    assert "Greeting" in spec["components"]["schemas"]


def test_dashboard_shows_whose_app_it_is(cli, cluster) -> None:
    import httpx

    deployed(cli, str(ROOT / "examples/counter.py::Counter"), "--user", "alice")
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()  # the cluster runs token auth
    apps = httpx.get(
        f"{cluster['dashboard_url']}/api/serve/applications/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()["applications"]
    deployment = apps["alice.counter"]["deployments"]["Counter"]
    metadata = deployment["deployment_config"]["user_config"]
    assert (metadata["owner"], metadata["app"], metadata["auth"], metadata["machine_type"]) == (
        "alice", "counter", "public", "XS"
    )
    assert len(metadata["revision"]) == 12
    assert apps["alice.counter"]["route_prefix"] == "/alice/counter"


def test_invalid_input_and_unknown_paths(cli, http) -> None:
    deployed(cli, str(ROOT / "examples/counter.py::Counter"), "--user", "alice")
    invalid = http.post("/alice/counter/", json={"nam": "ada"})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "name"]
    bad_color = http.post("/alice/counter/swatch", json={"color": "red"})
    assert bad_color.status_code == 422 and bad_color.json()["detail"][0]["loc"] == ["body", "color"]
    not_json = http.post("/alice/counter/", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 422

    missing = http.post("/alice/counter/nope", json={})
    assert missing.status_code == 404 and missing.json() == {"detail": "Path /nope not found"}
    assert http.post("/alice/no-such-app/", json={}).status_code == 404
    assert http.post("/nobody/counter/", json={}).status_code == 404


def test_app_errors_reach_the_client(cli, http, cluster) -> None:
    deployed(cli, f"{APPS}/errors.py::Errors", "--user", "alice")
    app_exc = http.post("/alice/errors/app-exception")
    assert app_exc.status_code == 429 and app_exc.json() == {"detail": "quota exceeded for this input"}

    field = http.post("/alice/errors/field-exception", json={"value": -1})
    assert field.status_code == 422
    assert field.json()["detail"][0]["loc"] == ["body", "value"]
    assert http.post("/alice/errors/field-exception", json={"value": 3}).json() == {"value": 3}

    crash = http.post("/alice/errors/crash")
    assert crash.status_code == 500 and crash.json() == {"detail": "Internal Server Error"}  # fal's answer
    assert "divided by zero" not in crash.text  # the traceback goes to the logs, not the client
    assert _replica_log_mentions(cluster, "alice.errors", crash.headers["x-fal-request-id"], "ZeroDivisionError")

    oom = http.post("/alice/errors/oom")
    assert oom.status_code == 503 and "out of memory" in oom.json()["detail"]

    started = time.monotonic()
    slow = http.post("/alice/errors/slow", json={"seconds": 30})
    assert slow.status_code == 504 and "timed out" in slow.json()["detail"]
    assert time.monotonic() - started < 10
    assert http.post("/alice/errors/slow-sync", json={"seconds": 5}).status_code == 504
    assert http.post("/alice/errors/slow", json={"seconds": 0.01}).json() == {"value": 1}


def _replica_log_mentions(cluster: dict, serve_app: str, *needles: str, timeout: float = 15) -> bool:
    logs = Path(cluster["temp_dir"]) / "session_latest/logs/serve"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in logs.glob(f"replica_{serve_app}_*.log"):
            text = log.read_text(errors="replace")
            if all(needle in text for needle in needles):
                return True
        time.sleep(0.5)
    return False


def test_async_setup(cli, http) -> None:
    deployed(cli, f"{APPS}/async_setup.py::AsyncLoader", "--user", "bob")
    assert http.post("/bob/async-loader/").json()["model"] == "loaded asynchronously"


def test_two_users_side_by_side(cli, http) -> None:
    deployed(cli, f"{APPS}/versioned.py::Versioned", "--user", "carol")
    deployed(cli, f"{APPS}/versioned.py::Versioned", "--user", "dave", "--app-name", "versioned")
    assert http.post("/carol/versioned/").json()["calls"] == 1
    assert http.post("/carol/versioned/").json()["calls"] == 2
    assert http.post("/dave/versioned/").json()["calls"] == 1  # a separate app, its own replica

    listing = cli("apps", "list", "--user", "carol")
    assert "carol/versioned" in listing.output and "dave/versioned" not in listing.output
    assert "RUNNING" in listing.output

    assert cli("apps", "delete", "versioned", "--user", "dave").exit_code == 0
    deadline = time.monotonic() + 30
    while http.post("/dave/versioned/").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert http.post("/dave/versioned/").status_code == 404
    assert http.post("/carol/versioned/").status_code == 200
    assert "dave/versioned" not in cli("apps", "list", "--all-users").output
    missing = cli("apps", "delete", "versioned", "--user", "dave")
    assert missing.exit_code != 0 and "no app dave/versioned" in missing.output


def test_local_python_modules_travel_to_replicas(cli, http) -> None:
    deployed(cli, f"{APPS}/local_modules.py::Shouter", "--user", "erin")
    assert http.post("/erin/shouter/", json={"text": "hi"}).json() == {"text": "HI!"}


def test_a_projects_app_files_and_package_travel_to_replicas(cli, http) -> None:
    """fal's `app_files`: the project's package imports at the app's top level, the app's
    own files open relative to its folder, what `app_files_ignore` names stays behind."""
    deployed(cli, f"{APPS}/project/service/app.py::ProjectApp", "--user", "erin")
    assert http.post("/erin/project-app/", json={"name": "erin"}).json() == {
        "greeting": "hello erin", "file": "from a file shipped with app_files", "skipped_shipped": False}


def test_websocket_endpoint(cli, base_url) -> None:
    from websockets.sync.client import connect

    deployed(cli, f"{APPS}/errors.py::Chat", "--user", "bob")
    with connect(base_url.replace("http://", "ws://") + "/bob/chat/ws") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "HELLO"


def test_teardown_runs_when_the_app_is_deleted(cli, http, tmp_path) -> None:
    # The runner writes to /data, its owner's area of the node's model cache.
    marker = Path(os.environ["TENANTSERVE_HOME"]) / "cache" / "users" / "bob" / f"teardown-{tmp_path.name}"
    app_file = tmp_path / "tidy.py"
    app_file.write_text((APPS / "teardown_app.py").read_text().replace("/tmp/tenantserve-teardown-marker", f"/data/{marker.name}"))
    deployed(cli, f"{app_file}::Tidy", "--user", "bob")
    assert http.post("/bob/tidy/").json() == {"ok": True}
    assert not marker.exists()
    assert cli("apps", "delete", "tidy", "--user", "bob").exit_code == 0
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.read_text() == "closed open"
