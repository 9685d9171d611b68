"""Who may act as whom, and the audit log: the control plane's account rules, on a
registry of their own (no cluster)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography.fernet import Fernet

from tenantserve.platform.control.accounts import AccessError, Accounts, principal, prune_audit, require_manage_scope
from tenantserve.platform.store.registry import AuditEntry, Quota, Registry, RegistryError
from tenantserve.platform.store.secret_box import SecretBox


@pytest.fixture
def platform(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.create_user("root", admin=True)
    box = SecretBox(Fernet.generate_key())
    root = Accounts(registry, principal(registry, registry.create_key("root")), box)
    keys = {name: root.create_user(name) for name in ("alice", "bob")}

    def as_user(name: str) -> Accounts:
        return Accounts(registry, principal(registry, keys[name]), box)

    return registry, root, as_user, keys


def test_a_user_acts_only_on_their_own_keys_and_secrets(platform) -> None:
    registry, _, as_user, _ = platform
    bob = as_user("bob")
    for refused in (lambda: bob.create_key("alice"), lambda: bob.list_keys("alice"),
                    lambda: bob.list_secrets("alice"), lambda: bob.set_secrets({"X": "1"}, "alice"),
                    lambda: bob.unset_secret("X", "alice"), lambda: bob.create_user("mallory"),
                    lambda: bob.set_quota("bob", Quota(max_apps=99)), lambda: bob.audit()):
        with pytest.raises(AccessError) as refusal:
            refused()
        assert refusal.value.status == 403
    assert registry.user("mallory") is None and registry.quota("bob") == Quota()
    assert bob.set_secrets({"TOKEN": "bobs"}) == "bob"
    assert list(bob.list_secrets()) == ["TOKEN"]
    assert as_user("alice").list_secrets() == {}


def test_an_admin_acts_for_any_existing_user(platform) -> None:
    registry, root, as_user, _ = platform
    key = root.create_key("alice", label="for alice")
    assert registry.authenticate(key) == "alice"
    root.set_secrets({"API": "v"}, "alice")
    assert list(as_user("alice").list_secrets()) == ["API"]
    with pytest.raises(AccessError) as missing:
        root.create_key("nobody")
    assert missing.value.status == 404
    with pytest.raises(AccessError) as bad_name:
        root.list_keys("../alice")
    assert bad_name.value.status == 404


def test_every_change_is_recorded_with_its_caller_and_key(platform) -> None:
    _, root, as_user, keys = platform
    bob = as_user("bob")
    new_key = bob.create_key(label="laptop")
    bob.set_secrets({"TOKEN": "never in the log"})
    bob.revoke_key(new_key.partition(":")[0])
    bob.list_secrets()  # reads are not recorded
    entries = root.audit(actor="bob")
    assert [(e.action, e.target) for e in entries] == [("key.create", "bob"), ("secret.set", "bob"), ("key.revoke", "bob")]
    assert {e.key_id for e in entries} == {keys["bob"].partition(":")[0]}
    assert entries[1].detail == {"names": ["TOKEN"]}
    assert "never in the log" not in repr(root.audit())
    assert ("user.create", "alice") in [(e.action, e.target) for e in root.audit(actor="root")]


def test_the_audit_log_forgets_entries_past_its_retention(platform) -> None:
    registry, root, _, _ = platform
    old = datetime.now(timezone.utc) - timedelta(days=10)
    registry.record(AuditEntry("root", "user.create", "ghost", at=old))
    assert prune_audit(registry, days=7) == 1
    assert "ghost" not in [e.target for e in root.audit()]
    assert root.audit(since=datetime.now(timezone.utc) - timedelta(minutes=5))


def test_an_api_scope_key_calls_apps_but_manages_nothing(platform) -> None:
    registry, _, as_user, keys = platform
    service = as_user("alice").create_key(label="service", scope="api")
    assert registry.authenticate(service) == "alice"  # what an app's ingress checks
    who = principal(registry, service)
    assert who is not None and who.scope == "api"
    with pytest.raises(AccessError) as refusal:
        require_manage_scope(who)
    assert refusal.value.status == 403 and "--scope admin" in refusal.value.detail
    require_manage_scope(principal(registry, keys["alice"]))
    assert [k.scope for k in registry.list_keys("alice")] == ["admin", "api"]
    with pytest.raises(RegistryError, match="no key scope"):
        registry.create_key("alice", scope="root")
