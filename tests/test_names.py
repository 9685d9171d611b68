"""Names of users, apps and secrets: one rule each, refused everywhere a name comes in, and
an admin's clean-up of what was stored under bad names before the rules held."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import insert

from tenantserve.adapters.fal.bundle import prepare
from tenantserve.adapters.fal.loader import AppLoadError
from tenantserve.platform.core.naming import NAME_RULE, InvalidNameError, check_name, check_secret_name, route_prefix
from tenantserve.platform.store.registry import Registry, RegistryError, api_keys, apps, revisions, secrets_table, users

from helpers import APPS, serve_connected

# The probe's name tricks: route injection, a newline for HAProxy's config, look-alikes,
# path tricks, case, underscores and a 64-character name.
BAD_NAMES = [
    "x /alice/priv", "x / yyyy", "a\nb", "ok\n", "café", "ａlice", "..", "%2F", "a/b", "UPPER", "a_b",
    "a" * 64, "-a", "a-", "", " ",
]
NOW = datetime.now(timezone.utc)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidNameError, match="1-63 lowercase letters"):
        check_name("app", name)
    with pytest.raises(InvalidNameError):
        route_prefix("alice", name)
    with pytest.raises(AppLoadError, match="1-63 lowercase letters.*--app-name"):
        prepare(f"{APPS}/versioned.py::Versioned", owner="alice", app_name=name)


def test_good_names_and_reserved_users() -> None:
    assert check_name("app", "my-app-2") == "my-app-2"
    assert check_name("app", "a" * 63) == "a" * 63
    with pytest.raises(InvalidNameError, match="reserved"):
        check_name("user", "queue")
    assert check_secret_name("HF_TOKEN") == "HF_TOKEN"
    for bad in ("1ABC", "A-B", "A B", "X\n", ""):
        with pytest.raises(InvalidNameError, match="environment variable"):
            check_secret_name(bad)


def test_the_registry_stores_only_valid_names(tmp_path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    with pytest.raises(InvalidNameError):
        registry.create_user("Bob")
    registry.create_user("bob")
    with pytest.raises(InvalidNameError):
        registry.set_secret("bob", "NOT OK", "sealed")
    bundle = prepare(f"{APPS}/versioned.py::Versioned", owner="bob")
    from dataclasses import replace

    with pytest.raises(InvalidNameError):
        registry.put(replace(bundle, app_name="x /alice/priv"))
    with pytest.raises(RegistryError):
        registry.create_key("nobody")


def _store_bad_names(registry: Registry, owner: str) -> str:
    """Rows as an older platform stored them, before names were checked on the way in."""
    good = prepare(f"{APPS}/versioned.py::Versioned", owner=owner)
    bad_app = "x /alice/priv"
    data = json.loads(good.to_json())
    data["app_name"] = bad_app
    with registry.engine.begin() as conn:
        conn.execute(insert(apps).values(owner=owner, name=bad_app, current_revision="r1", auth_mode="private",
                                         updated_at=NOW))
        conn.execute(insert(revisions).values(owner=owner, app=bad_app, revision="r1", bundle=json.dumps(data),
                                              created_at=NOW))
        conn.execute(insert(users).values(name="Bad User", is_admin=False, created_at=NOW))
        conn.execute(insert(api_keys).values(key_id="k1", owner="Bad User", secret_hash="x", label="",
                                             created_at=NOW))
        conn.execute(insert(secrets_table).values(owner=owner, name="BAD NAME", value="v", updated_at=NOW))
    return bad_app


def test_invalid_names_are_found_and_purged(tmp_path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.create_user("carol")
    registry.put(prepare(f"{APPS}/versioned.py::Versioned", owner="carol"))
    bad_app = _store_bad_names(registry, "carol")
    found = registry.invalid_names()
    assert found.users == ["Bad User"]
    assert found.apps == [("carol", bad_app)]
    assert found.secrets == [("carol", "BAD NAME")]
    registry.purge(found)
    assert not registry.invalid_names()
    assert [r.app for r in registry.list()] == ["versioned"]
    assert [name for name, _ in registry.list_users()] == ["carol"]


def test_deploys_under_bad_names_are_refused_and_deploy_nothing(cli, cluster) -> None:
    serve = serve_connected()
    before = set(serve.status().applications)
    for name in ("x /alice/priv", "a\nb", "café", "..", "%2F", "a/b", "UPPER", "a_b", "a" * 64):
        result = cli("deploy", f"{APPS}/versioned.py::Versioned", "--app-name", name, "--auth", "public",
                     as_user="bob")
        assert result.exit_code == 1, (name, result.output)
        assert NAME_RULE in " ".join(result.output.split()), result.output
    assert set(serve.status().applications) == before


def test_an_admin_removes_what_was_stored_or_deployed_under_bad_names(cli, cluster, keys) -> None:
    serve = serve_connected()
    registry = Registry()
    bad_app = _store_bad_names(registry, "bob")

    @serve.deployment(ray_actor_options={"num_cpus": 0.01})
    def stray() -> str:
        return "stray"

    serve.run(stray.bind(), name="bob.UPPER", route_prefix="/bob/UPPER")
    assert cli("apps", "delete", bad_app, as_user="bob").exit_code == 1  # no name can reach it
    assert cli("users", "clean-names", as_user="bob").exit_code == 1  # admins only

    dry = cli("users", "clean-names", "--dry-run")
    assert dry.exit_code == 0, dry.output
    for line in ("would remove user 'Bad User'", f"would remove app 'bob'/{bad_app!r}",
                 "would remove secret 'BAD NAME' of 'bob'", "would remove Serve app 'bob.UPPER'"):
        assert line in dry.output, dry.output
    assert "bob.UPPER" in serve.status().applications

    done = cli("users", "clean-names")
    assert done.exit_code == 0 and "removed Serve app 'bob.UPPER'" in done.output, done.output
    assert "bob.UPPER" not in serve.status().applications
    assert not registry.invalid_names()
    assert "Every stored and deployed name follows the naming rules" in cli("users", "clean-names").output
