"""The registry behaves the same on SQLite and on PostgreSQL (a real server, when one runs).

PostgreSQL is found at $TENANTSERVE_TEST_POSTGRES (default: the local server on
127.0.0.1:5432, database `test`); each run works in a database of its own."""

import json
import uuid

import httpx
import pytest
import sqlalchemy as sa

from tenantserve.adapters.fal.bundle import AppBundle, prepare
from tenantserve.platform.store.registry import Registry, RegistryError

from helpers import APPS, POSTGRES, free_port, platform_cmd, wait_until


def test_users_keys_and_apps(registry_url) -> None:
    registry = Registry(registry_url)
    Registry(registry_url)  # migrations are idempotent
    owner = f"u{uuid.uuid4().hex[:8]}"
    registry.create_user(owner)
    with pytest.raises(RegistryError, match="exists already"):
        registry.create_user(owner)
    key = registry.create_key(owner, label="ci")
    assert registry.authenticate(key) == owner
    key_id, secret = key.split(":")
    assert registry.authenticate(f"{key_id}:wrong") is None
    assert registry.authenticate("no-colon") is None
    assert [k.label for k in registry.list_keys(owner)] == ["ci"]
    registry.revoke_key(owner, key_id)
    assert registry.authenticate(key) is None
    with pytest.raises(RegistryError):
        registry.revoke_key(owner, key_id)

    first = prepare(f"{APPS}/versioned.py::Versioned", owner=owner)
    registry.put(first)
    second = prepare(f"{APPS}/async_setup.py::AsyncLoader", owner=owner, app_name="versioned")
    registry.put(second)
    assert registry.get(owner, "versioned").revision == second.revision
    assert [r.app for r in registry.list(owner)] == ["versioned"]
    assert AppBundle.registered(registry.get(owner, "versioned")) == second
    assert [r.revision for r in registry.revisions(owner, "versioned")] == [first.revision, second.revision]
    with registry.engine.connect() as conn:
        secrets_stored = conn.execute(sa.text("select secret_hash from api_keys")).scalars().all()
    assert secret not in secrets_stored  # only the hash is stored
    assert registry.delete(owner, "versioned") and registry.get(owner, "versioned") is None


@pytest.fixture
def empty_postgres_url(postgres_url):
    """A database of its own on the same server, with nothing in it."""
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    name = f"tenantserve_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.cluster  # a platform of its own
def test_platform_on_postgresql(empty_postgres_url, tmp_path) -> None:
    """A platform whose registry is PostgreSQL: its first user, a deploy through the
    control-plane API, keys checked against that registry by the app's ingress, and two
    queue dispatchers sharing the queue, each request run once."""
    postgres_url = empty_postgres_url
    home = tmp_path / "home"
    env = {"TENANTSERVE_DB": postgres_url, "TENANTSERVE_HOME": str(home), "HOME": str(tmp_path / "user"),
           "TENANTSERVE_KEY": "", "TENANTSERVE_QUEUE_DISPATCHERS": "2"}
    try:
        platform_cmd("up", f"--port={free_port()}", f"--http-port={free_port()}", f"--dashboard-port={free_port()}",
                     env=env)
        base = json.loads((home / "cluster.json").read_text())["http_url"]
        admin = platform_cmd("whoami", env=env).stdout.strip().splitlines()[-1]  # the first caller: the admin
        key = platform_cmd("users", "create", "pguser", env=env).stdout.strip().splitlines()[-1]
        platform_cmd("deploy", f"{APPS}/versioned.py::Versioned", "--user", "pguser", "--app-name", "on-postgres",
                     env=env)
        assert httpx.post(f"{base}/pguser/on-postgres/").status_code == 401
        answer = httpx.post(f"{base}/pguser/on-postgres/", headers={"Authorization": f"Key {key}"})
        assert answer.json()["version"] == "v1"
        assert "pguser/on-postgres" in platform_cmd("apps", "list", "--user", "pguser", env=env).stdout
        auth = {"Authorization": f"Key {key}"}
        submitted = [httpx.post(f"{base}/queue/pguser/on-postgres", json={}, headers=auth).json() for _ in range(30)]
        with sa.create_engine(postgres_url).connect() as conn:
            wait_until(lambda: conn.execute(sa.text(
                "select count(*) from queued_requests where status = 'COMPLETED'")).scalar() == 30 or None,
                "30 queued requests to complete", timeout=60)
            dispatchers = conn.execute(sa.text("select count(distinct dispatcher), max(attempts) "
                                               "from queued_requests")).one()
        assert tuple(dispatchers) == (2, 1)  # both dispatchers took a share; none ran a request twice
        assert all(httpx.get(s["response_url"], headers=auth).json()["version"] == "v1" for s in submitted)
        registry = Registry(postgres_url)
        assert registry.get("pguser", "on-postgres") is not None and registry.user(admin)
        platform_cmd("apps", "delete", "pguser/on-postgres", env=env)
    finally:
        platform_cmd("down", check=False, env=env)


def test_each_user_gets_a_number_of_their_own(registry_url) -> None:
    registry = Registry(registry_url)
    names = [f"n{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for name in names:
        registry.create_user(name)
    numbers = [registry.user_number(name) for name in names]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3 and numbers[0] >= 1
    assert registry.user_number("nobody-like-this") is None


def test_a_removed_users_number_is_never_given_again(registry_url) -> None:
    from tenantserve.platform.store.registry import InvalidNames

    registry = Registry(registry_url)
    removed, later = f"r{uuid.uuid4().hex[:8]}", f"l{uuid.uuid4().hex[:8]}"
    registry.create_user(removed)
    number = registry.user_number(removed)
    registry.purge(InvalidNames(users=[removed], apps=[], secrets=[]))  # what `users clean-names` does
    registry.create_user(later)
    assert registry.user_number(later) > number  # not the removed user's OS user


def test_users_made_at_the_same_time_get_numbers_of_their_own(registry_url) -> None:
    from concurrent.futures import ThreadPoolExecutor

    names = [f"c{uuid.uuid4().hex[:8]}" for _ in range(8)]
    registries = [Registry(registry_url) for _ in names]  # one connection pool each, as separate CLIs have
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda made: made[0].create_user(made[1]), zip(registries, names)))
    numbers = [registries[0].user_number(name) for name in names]
    assert len(set(numbers)) == 8 and None not in numbers


def test_users_from_before_numbers_get_them_on_upgrade(tmp_path) -> None:
    from alembic import command
    from alembic.config import Config

    from tenantserve.platform.store.registry import MIGRATIONS, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    with engine.begin() as connection:
        for name, created in (("zed", "2026-01-01"), ("amy", "2026-02-01")):
            connection.execute(sa.text("insert into users (name, is_admin, created_at) values (:n, 0, :c)"),
                               {"n": name, "c": created})
    registry = Registry(url)
    assert (registry.user_number("zed"), registry.user_number("amy")) == (1, 2)  # in the order they came
    registry.create_user("bea")
    assert registry.user_number("bea") == 3
