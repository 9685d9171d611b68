"""The control-plane API at /api: reached with a key alone (no database, no Ray), every
call authorized on the server, every change in the audit log."""

from __future__ import annotations

import httpx

from conftest import wait_until


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


def test_an_admin_manages_users_and_reads_the_audit_log(http: httpx.Client, keys: dict[str, str]) -> None:
    admin = _as(_admin_key())
    wait_until(lambda: http.get("/api/v1/me", headers=admin).status_code == 200 or None,
               "the control plane to answer", timeout=60)
    assert http.post("/api/v1/users", json={"name": "queue"}, headers=admin).status_code == 422  # reserved
    made = http.post("/api/v1/users", json={"name": "viktor"}, headers=admin)
    assert made.status_code == 201
    viktor = _as(made.json()["key"])
    assert http.get("/api/v1/me", headers=viktor).json() == {
        "user": "viktor", "admin": False, "key_id": made.json()["key"].partition(":")[0]}
    assert http.put("/api/v1/users/viktor/quota", json={"apps": 2}, headers=admin).json()["apps"] == 2
    assert http.get("/api/v1/users/viktor/quota", headers=admin).json() == {"apps": 2, "replicas": None, "gpus": None}
    assert "viktor" in [u["name"] for u in http.get("/api/v1/users", headers=admin).json()]

    http.put("/api/v1/secrets", json={"values": {"V": "1"}}, headers=viktor)
    entries = http.get("/api/v1/audit", params={"actor": "viktor"}, headers=admin).json()
    assert [(e["action"], e["target"], e["key_id"]) for e in entries] == [
        ("secret.set", "viktor", made.json()["key"].partition(":")[0])]
    mine = [(e["action"], e["target"]) for e in http.get("/api/v1/audit", headers=admin).json()]
    assert ("user.create", "viktor") in mine and ("user.quota", "viktor") in mine
