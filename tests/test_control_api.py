"""The control-plane API at /api: reached with a key alone (no database, no Ray), every
call authorized on the server, every change in the audit log."""

from __future__ import annotations

import json

import httpx

from helpers import APPS, CuttingProxy, laptop_cli, laptop_env, wait_until


def _as(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Key {key}"} if key else {}


def _admin_key() -> str:
    from tenantserve.cli.common import configured_key

    key = configured_key()
    assert key
    return key


def test_a_key_is_all_a_caller_needs_and_all_it_gets(http: httpx.Client, keys: dict[str, str]) -> None:
    wait_until(lambda: http.get("/api/v1/me", headers=_as(keys["uma"])).status_code == 200 or None,
               "the control plane to answer", timeout=60)
    assert http.get("/api/v1/me", headers=_as(keys["uma"])).json()["user"] == "uma"
    assert http.get("/api/v1/me").status_code == 401
    assert http.get("/api/v1/me", headers=_as("nope:nope")).status_code == 401
    # The key is checked before the body: a malformed call without one is refused, not parsed.
    assert http.post("/api/v1/keys", content=b"{not json").status_code == 401
    assert http.post("/api/v1/keys", content=b"{not json", headers=_as("nope:nope")).status_code == 401
    assert http.post("/api/v1/keys", content=b"{not json", headers=_as(keys["uma"])).status_code == 422
    assert "/v1/keys" in http.get("/api/openapi.json").json()["paths"]

    uma = _as(keys["uma"])
    assert http.post("/api/v1/keys", params={"user": "alice"}, json={}, headers=uma).status_code == 403
    assert http.get("/api/v1/secrets", params={"user": "alice"}, headers=uma).status_code == 403
    assert http.get("/api/v1/users", headers=uma).status_code == 403
    assert http.put("/api/v1/users/uma/quota", json={"apps": 99}, headers=uma).status_code == 403
    assert http.get("/api/v1/audit", headers=uma).status_code == 403

    assert http.put("/api/v1/secrets", json={"values": {"UMA_TOKEN": "t0ken"}}, headers=uma).status_code == 204
    listed = http.get("/api/v1/secrets", headers=uma)
    assert [s["name"] for s in listed.json()] == ["UMA_TOKEN"] and "t0ken" not in listed.text
    assert http.put("/api/v1/secrets", json={"values": {"not a name": "x"}}, headers=uma).status_code == 422
    assert http.delete("/api/v1/secrets/UMA_TOKEN", headers=uma).status_code == 204
    assert http.delete("/api/v1/secrets/UMA_TOKEN", headers=uma).status_code == 404

    created = http.post("/api/v1/keys", json={"label": "laptop"}, headers=uma)
    assert created.status_code == 201
    laptop = created.json()["key"]
    assert http.get("/api/v1/me", headers=_as(laptop)).json()["user"] == "uma"
    assert http.delete(f"/api/v1/keys/{laptop.partition(':')[0]}", headers=uma).status_code == 204
    assert http.get("/api/v1/me", headers=_as(laptop)).status_code == 401


def test_an_admin_manages_users_and_reads_the_audit_log(http: httpx.Client, keys: dict[str, str], cli) -> None:
    admin = _as(_admin_key())
    wait_until(lambda: http.get("/api/v1/me", headers=admin).status_code == 200 or None,
               "the control plane to answer", timeout=60)
    assert http.post("/api/v1/users", json={"name": "queue"}, headers=admin).status_code == 422  # reserved
    made = http.post("/api/v1/users", json={"name": "viktor"}, headers=admin)
    assert made.status_code == 201
    viktor = _as(made.json()["key"])
    assert http.get("/api/v1/me", headers=viktor).json() == {
        "user": "viktor", "admin": False, "key_id": made.json()["key"].partition(":")[0], "scope": "admin"}
    assert http.put("/api/v1/users/viktor/quota", json={"apps": 2}, headers=admin).json()["apps"] == 2
    assert http.get("/api/v1/users/viktor/quota", headers=admin).json() == {"apps": 2, "replicas": None, "gpus": None}
    assert "viktor" in [u["name"] for u in http.get("/api/v1/users", headers=admin).json()]

    http.put("/api/v1/secrets", json={"values": {"V": "1"}}, headers=viktor)
    entries = http.get("/api/v1/audit", params={"actor": "viktor"}, headers=admin).json()
    assert [(e["action"], e["target"], e["key_id"]) for e in entries] == [
        ("secret.set", "viktor", made.json()["key"].partition(":")[0])]
    mine = [(e["action"], e["target"]) for e in http.get("/api/v1/audit", headers=admin).json()]
    assert ("user.create", "viktor") in mine and ("user.quota", "viktor") in mine
    shown = cli("audit", "--actor", "viktor", "--since", "1h")
    assert shown.exit_code == 0 and "secret.set" in shown.output
    assert cli("audit", "--since", "yesterday").exit_code == 2


def test_the_cli_needs_only_the_platforms_url_and_a_key(base_url: str, keys: dict[str, str], tmp_path) -> None:
    """A second user's shell, on a laptop: no state directory, no database URL, no Ray address."""
    env = laptop_env(base_url, keys["rita"], tmp_path)
    platform = laptop_cli(env, timeout=120)

    assert platform("whoami").strip() == "rita"
    new_key = platform("keys", "create", "--label", "laptop").strip().splitlines()[-1]
    assert "laptop" in platform("keys", "list")
    platform("secrets", "set", "RITA_TOKEN=abc")
    assert "RITA_TOKEN" in platform("secrets", "list") and "abc" not in platform("secrets", "list")
    platform("secrets", "unset", "RITA_TOKEN")
    assert "rita cannot act as alice" in platform("secrets", "list", "--user", "alice", ok=False)
    assert "rita is not an admin" in platform("audit", ok=False)
    assert "rita is not an admin" in platform("users", "list", ok=False)
    platform("keys", "revoke", new_key.partition(":")[0])

    del env["TENANTSERVE_KEY"]
    assert "no API key" in platform("whoami", ok=False)
    assert "unknown or revoked" in platform("login", new_key, ok=False)
    assert "Logged in as rita" in platform("login", keys["rita"])
    assert platform("whoami").strip() == "rita"  # the saved credentials, in this HOME
    assert not (tmp_path / ".tenantserve" / "registry.db").exists()


def test_every_app_command_works_with_only_the_url_and_a_key(base_url: str, keys: dict[str, str], tmp_path,
                                                             http: httpx.Client) -> None:
    """A second user deploys, rolls back, scales, lists, reads logs and status, and deletes,
    with a shell that holds only the platform's URL and a key; another user's apps are out of reach."""
    platform = laptop_cli(laptop_env(base_url, keys["tina"], tmp_path))

    tina = _as(keys["tina"])
    app = tmp_path / "versioned.py"
    app.write_text((APPS / "versioned.py").read_text())
    assert "Deployed tina/mine" in platform("deploy", f"{app}::Versioned", "--app-name", "mine")
    app.write_text(app.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
    platform("deploy", f"{app}::Versioned", "--app-name", "mine")
    assert http.post("/tina/mine/", headers=tina).json()["version"] == "v2"

    revisions = [[cell for cell in line.split() if cell not in "│┃"]
                 for line in platform("apps", "list-rev", "mine").splitlines() if "Versioned" in line]
    assert len(revisions) == 2 and revisions[1][0] == "*"
    assert "now serves revision" in platform("apps", "set-rev", "mine", revisions[0][0])
    assert http.post("/tina/mine/", headers=tina).json()["version"] == "v1"
    assert "keep_alive=42" in platform("apps", "scale", "mine", "--keep-alive", "42")
    assert "tina/mine" in platform("apps", "list")
    assert "ALIVE" in platform("apps", "runners", "mine")
    platform("logs", "mine", "--since", "10m")
    assert "tina/mine" in platform("status")

    service = platform("keys", "create", "--scope", "api", "--label", "service").strip().splitlines()[-1]
    assert http.post("/tina/mine/", headers=_as(service)).status_code == 200  # it calls apps
    assert http.get("/api/v1/me", headers=_as(service)).json()["scope"] == "api"
    for method, path in (("GET", "/api/v1/apps"), ("GET", "/api/v1/keys"), ("DELETE", "/api/v1/apps/tina/mine")):
        refused = http.request(method, path, headers=_as(service))
        assert refused.status_code == 403 and "API scope" in refused.json()["detail"], (method, path)

    for args in (("apps", "list", "--user", "alice"), ("apps", "delete", "alice/mine"), ("apps", "runners", "alice/mine"),
                 ("logs", "alice/mine"), ("apps", "list-rev", "alice/mine"), ("apps", "set-rev", "alice/mine", "abc"),
                 ("apps", "scale", "alice/mine", "--keep-alive", "1"), ("runners", "kill", "x", "--user", "alice"),
                 ("deploy", f"{app}::Versioned", "--user", "alice")):
        assert "tina cannot act as alice" in platform(*args, ok=False), args
    assert "an admin key" in platform("apps", "list", "--all-users", ok=False)
    assert "no app tina/nothing" in platform("apps", "delete", "nothing", ok=False)

    upload = {"filename": "versioned.py", "source": app.read_text(), "class_name": "Versioned"}
    for name in ("x /alice/priv", "a/b", "..", "%2F", "сafe", "a" * 64):
        refused = http.post("/api/v1/apps", json={"app": upload, "app_name": name}, headers=tina)
        assert refused.status_code == 422 and "app name" in refused.json()["detail"], (name, refused.text)
    for user in ("queue", "files", "api", "../alice", "ALICE"):
        assert http.post("/api/v1/apps", params={"user": user}, json={"app": upload},
                         headers=tina).status_code in (403, 404), user
    assert http.delete("/api/v1/apps/alice/%2E%2E", headers=tina).status_code in (403, 404)
    plan = http.post("/api/v1/apps/plan", json={"app": upload, "app_name": "planned"}, headers=tina)
    assert plan.status_code == 200 and plan.json()["route"] == "/tina/planned", plan.text
    assert http.post("/tina/planned/", headers=tina).status_code == 404  # a plan deploys nothing

    assert "Deleted tina/mine" in platform("apps", "delete", "mine")
    assert http.post("/tina/mine/", headers=tina).status_code == 404
    assert not (tmp_path / ".tenantserve").exists() or not list((tmp_path / ".tenantserve").glob("*.db"))


def test_a_deploy_goes_on_when_its_stream_drops_and_the_cli_picks_it_up(base_url: str, keys: dict[str, str],
                                                                       tmp_path, http: httpx.Client) -> None:
    """A connection cut in the middle of a deploy ends the stream, not the deploy: the CLI asks
    for the rest of its events and reports how it went; another tenant cannot read them."""
    proxy = CuttingProxy(base_url, cut_request=b"POST /api/v1/apps", cut_after=b'"accepted"')
    try:
        platform = laptop_cli(laptop_env(proxy.url, keys["uma"], tmp_path))
        output = platform("deploy", f"{APPS}/versioned.py::Versioned", "--app-name", "cut", "--auth", "public")
    finally:
        proxy.close()
    assert proxy.cuts == 1 and "Deployed uma/cut" in output, output
    assert http.post("/uma/cut/").json()["version"] == "v1"

    stream = http.post("/api/v1/apps", headers=_as(keys["uma"]), json={
        "app": {"filename": "versioned.py", "source": (APPS / "versioned.py").read_text(), "class_name": "Versioned"},
        "app_name": "cut"})
    events = [json.loads(line) for line in stream.text.splitlines() if line.strip()]
    deploy_id = events[0]["deploy_id"]
    assert events[-1]["event"] == "done", events
    again = http.get(f"/api/v1/deploys/{deploy_id}", params={"after": 1}, headers=_as(keys["uma"]))
    assert [json.loads(line) for line in again.text.splitlines()] == events[1:]
    assert http.get(f"/api/v1/deploys/{deploy_id}", headers=_as(keys["tina"])).status_code == 404
    assert "Deleted uma/cut" in laptop_cli(laptop_env(base_url, keys["uma"], tmp_path))("apps", "delete", "cut")
