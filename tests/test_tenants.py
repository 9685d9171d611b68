"""Users, API keys and per-app auth modes, through the real HTTP ingress and the CLI."""

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import APPS, deployed, laptop_env


def _key(keys: dict, user: str) -> dict:
    return {"Authorization": f"Key {keys[user]}"}


@pytest.fixture(scope="module")
def modes(cli) -> None:
    for mode in ("private", "shared", "public"):
        deployed(cli, f"{APPS}/versioned.py::Versioned", "--user", "alice", "--app-name", mode, "--auth", mode)


@pytest.mark.parametrize(
    "mode, no_key, bad_key, other_user, owner",
    [
        ("private", 401, 401, 403, 200),
        ("shared", 401, 401, 200, 200),
        ("public", 200, 200, 200, 200),
    ],
)
def test_auth_modes(modes, http, keys, mode, no_key, bad_key, other_user, owner) -> None:
    url = f"/alice/{mode}/"
    assert http.post(url).status_code == no_key
    wrong_secret = keys["alice"].split(":")[0] + ":not-the-secret"
    assert http.post(url, headers={"Authorization": f"Key {wrong_secret}"}).status_code == bad_key
    assert http.post(url, headers={"Authorization": "Key garbage"}).status_code == bad_key
    assert http.post(url, headers=_key(keys, "bob")).status_code == other_user
    assert http.post(url, headers=_key(keys, "alice")).status_code == owner


def test_refusals_say_what_to_send(modes, http, keys) -> None:
    missing = http.post("/alice/private/")
    assert "Authorization: Key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Key"
    assert http.post("/alice/private/", headers=_key(keys, "bob")).json() == {"detail": "This app is private to alice"}
    # Health stays open for load balancers; everything else, the schema included, needs a key.
    assert http.get("/alice/private/health").status_code == 200
    assert http.get("/alice/private/openapi.json").status_code == 401


def test_an_apps_own_health_endpoint_needs_a_key(cli, http, keys) -> None:
    deployed(cli, f"{APPS}/own_health.py::OwnHealth", "--user", "alice", "--auth", "private")
    deployed(cli, f"{APPS}/own_health.py::OwnHealth", "--user", "alice", "--app-name", "own-health-shared",
             "--auth", "shared")
    for url in ("/alice/own-health/health", "/alice/own-health-shared/health"):
        assert http.post(url).status_code == 401
        assert http.post(url, headers={"Authorization": "Key garbage:garbage"}).status_code == 401
        assert http.post(url, headers=_key(keys, "alice")).json() == {"ran": True}
        assert http.get(url).json()["status"] == "ok"  # the platform's own GET /health stays keyless
    assert http.post("/alice/own-health/health", headers=_key(keys, "bob")).status_code == 403
    assert http.post("/alice/own-health-shared/health", headers=_key(keys, "bob")).json() == {"ran": True}
    with httpx.Client(base_url=str(http.base_url)) as client:
        assert client.request("PUT", "/alice/own-health/health").status_code == 401


def test_deploy_defaults_to_private(cli, http, keys) -> None:
    result = cli("deploy", f"{APPS}/async_setup.py::AsyncLoader", as_user="carol")
    assert result.exit_code == 0, result.output
    assert "(auth: private)" in result.output
    assert http.post("/carol/async-loader/").status_code == 401
    assert http.post("/carol/async-loader/", headers=_key(keys, "carol")).status_code == 200


def test_revoked_key_stops_working(cli, http) -> None:
    created = cli("keys", "create", "--label", "short-lived", as_user="dave")
    key = created.output.strip().splitlines()[-1]
    assert cli("deploy", f"{APPS}/versioned.py::Versioned", "--auth", "shared", as_user="dave").exit_code == 0
    assert http.post("/dave/versioned/", headers={"Authorization": f"Key {key}"}).status_code == 200
    listing = cli("keys", "list", as_user="dave").output
    assert "short-lived" in listing and key.split(":")[1] not in listing  # never the secret

    key_id = key.split(":")[0]
    assert cli("keys", "revoke", key_id, as_user="dave").exit_code == 0
    deadline = time.monotonic() + 20
    while http.post("/dave/versioned/", headers={"Authorization": f"Key {key}"}).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.5)
    assert "revoked" in cli("keys", "list", as_user="dave").output


def test_users_act_only_on_their_own(cli, modes) -> None:
    assert "alice/private" not in cli("apps", "list", as_user="bob").output
    assert "alice/private" in cli("apps", "list", as_user="alice").output
    for args in (
        ("deploy", f"{APPS}/versioned.py::Versioned", "--user", "alice"),
        ("apps", "delete", "alice/private"),
        ("apps", "list", "--user", "alice"),
        ("keys", "list", "--user", "alice"),
    ):
        refused = cli(*args, as_user="bob")
        assert refused.exit_code == 1 and "bob cannot act as alice" in refused.output, args
    assert cli("apps", "list", "--all-users", as_user="bob").exit_code == 1
    assert "not an admin" in cli("users", "create", "mallory", as_user="bob").output
    # Same app name, different users: two apps.
    deployed(cli, f"{APPS}/versioned.py::Versioned", "--user", "bob", "--app-name", "private")


def test_private_websocket_needs_the_owners_key(cli, base_url, keys) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    deployed(cli, f"{APPS}/errors.py::Chat", "--user", "erin", "--auth", "private")
    url = base_url.replace("http://", "ws://") + "/erin/chat/ws"
    with pytest.raises((ConnectionClosed, InvalidStatus)):
        with connect(url, additional_headers=_key(keys, "bob")) as ws:
            ws.send("hi")
            ws.recv(timeout=10)
    with connect(url, additional_headers=_key(keys, "erin")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "HI"


def test_secrets_reach_only_the_owners_replicas(cli, http, keys) -> None:
    assert cli("secrets", "set", "API_TOKEN=s3cr3t-value", "REGION=eu", as_user="frank").exit_code == 0
    listing = cli("secrets", "list", as_user="frank").output
    assert "API_TOKEN" in listing and "s3cr3t-value" not in listing
    deployed(cli, f"{APPS}/env_probe.py::EnvProbe", "--user", "frank")
    deployed(cli, f"{APPS}/env_probe.py::EnvProbe", "--user", "grace")
    assert http.post("/frank/env-probe/", json={"name": "API_TOKEN"}).json()["value"] == "s3cr3t-value"
    assert http.post("/grace/env-probe/", json={"name": "API_TOKEN"}).json()["value"] is None
    # An app that names its secrets (fal's `secrets=`) gets those of its owner's only.
    deployed(cli, f"{APPS}/env_probe.py::PickyProbe", "--user", "frank")
    assert http.post("/frank/picky-probe/", json={"name": "REGION"}).json()["value"] == "eu"
    assert http.post("/frank/picky-probe/", json={"name": "API_TOKEN"}).json()["value"] is None

    from tenantserve.platform.store.registry import Registry

    stored = Registry().secrets("frank")["API_TOKEN"][0]
    assert "s3cr3t" not in stored  # encrypted at rest
    assert cli("secrets", "list", "--user", "frank", as_user="grace").exit_code == 1
    assert cli("secrets", "unset", "REGION", as_user="frank").exit_code == 0
    assert "REGION" not in cli("secrets", "list", as_user="frank").output
    assert cli("secrets", "unset", "REGION", as_user="frank").exit_code == 1
    assert cli("secrets", "set", "not a name=1", as_user="frank").exit_code == 1


def test_quotas_are_enforced_at_deploy_and_scale(cli, http, keys, base_url, tmp_path) -> None:
    assert cli("users", "quota", "olga", "--apps", "1", "--replicas", "3", "--gpus", "0").exit_code == 0
    assert "bob is not an admin" in cli("users", "quota", "olga", "--apps", "9", as_user="bob").output
    deployed(cli, f"{APPS}/versioned.py::Versioned", "--user", "olga", "--app-name", "first")

    second = cli("deploy", f"{APPS}/versioned.py::Versioned", "--app-name", "second", as_user="olga")
    assert second.exit_code == 1 and "apps would be 2, the limit is 1" in second.output
    assert http.post("/olga/second/").status_code == 404
    ran = cli("run", f"{APPS}/versioned.py::Versioned", as_user="olga")  # an ephemeral app counts as well
    assert ran.exit_code == 1 and "apps would be 2, the limit is 1" in ran.output

    too_wide = cli("apps", "scale", "first", "--max-concurrency", "4", as_user="olga")
    assert too_wide.exit_code == 1 and "replicas (sum of max_concurrency) would be 4, the limit is 3" in too_wide.output
    assert cli("apps", "scale", "first", "--max-concurrency", "3", as_user="olga").exit_code == 0
    wide = next(re.search(r"\b[0-9a-f]{12}\b", line).group() for line in
                cli("apps", "list-rev", "first", as_user="olga").output.splitlines() if re.search(r"\b\d+/3\b", line))
    assert cli("apps", "scale", "first", "--max-concurrency", "1", as_user="olga").exit_code == 0
    assert cli("users", "quota", "olga", "--replicas", "2").exit_code == 0
    rolled = cli("apps", "set-rev", "first", wide, as_user="olga")  # an older revision counts as a deploy
    assert rolled.exit_code == 1 and "would be 3, the limit is 2" in rolled.output, rolled.output

    gpu = cli("deploy", f"{APPS}/gpu.py::GpuApp", "--app-name", "first", as_user="olga")
    assert gpu.exit_code == 1 and "GPUs" in gpu.output and "the limit is 0" in gpu.output
    assert http.post("/olga/first/").json()["version"] == "v1"  # still the app it was

    # A `platform run` app's replicas count too, not only its name.
    assert cli("users", "quota", "olga", "--apps", "2", "--replicas", "3").exit_code == 0
    exe = shutil.which("platform") or str(Path(sys.executable).parent / "platform")
    run = subprocess.Popen([exe, "run", f"{APPS}/versioned.py::Versioned"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=laptop_env(base_url, keys["olga"], tmp_path))
    try:
        for line in iter(run.stdout.readline, ""):
            if "Access your exposed service" in line:
                break
        wider = cli("apps", "scale", "first", "--max-concurrency", "2", as_user="olga")  # 1 + the run's 2
        assert wider.exit_code == 1 and "replicas (sum of max_concurrency) would be 4, the limit is 3" in wider.output
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=60)
    assert cli("users", "quota", "olga", "--clear").exit_code == 0


def test_runners_list_and_kill(cli, http) -> None:
    deployed(cli, f"{APPS}/env_probe.py::EnvProbe", "--user", "ivan", "--app-name", "probe")
    pid = http.post("/ivan/probe/", json={"name": "HOME"}).json()["pid"]  # the runner process's own id
    listing = cli("apps", "runners", "probe", as_user="ivan")
    rows = [line.split()[1] for line in listing.output.splitlines() if "ALIVE" in line]
    assert listing.exit_code == 0 and len(rows) == 1, listing.output
    runner_id = rows[0]

    assert "no runner" in cli("runners", "kill", runner_id, as_user="bob").output  # not bob's
    killed = cli("runners", "kill", runner_id, as_user="ivan")
    assert killed.exit_code == 0 and "ivan/probe" in killed.output
    deadline = time.monotonic() + 60
    new_pid = None
    while time.monotonic() < deadline:  # min_concurrency=1: Serve brings a replica back
        try:
            response = http.post("/ivan/probe/", json={"name": "HOME"})
        except httpx.TransportError:  # a pooled connection closed by HAProxy's reload as it was used
            time.sleep(0.5)
            continue
        if response.status_code == 200 and response.json()["pid"] != pid:
            new_pid = response.json()["pid"]
            break
        time.sleep(0.5)
    assert new_pid is not None
