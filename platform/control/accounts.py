"""Who may act as whom, and the account actions of the control plane (keys, secrets,
users, quotas, the audit log), each authorized for its caller and recorded.

One rule, for every front end (the control-plane API, the CLI): a user acts on their own
things; an admin acts on anyone's; nobody acts for a user that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from tenantserve.platform.core import settings
from tenantserve.platform.core.naming import InvalidNameError, check_name, check_secret_name
from tenantserve.platform.store.registry import ApiKey, AuditEntry, Quota, Registry, RegistryError
from tenantserve.platform.store.secret_box import SecretBox


def audit_days() -> float:
    """How many days the audit log keeps an entry (`TENANTSERVE_AUDIT_DAYS`, default 90)."""
    return settings.AUDIT_DAYS.value()


class AccessError(Exception):
    """An action its caller may not take (403), or on something that does not exist (404)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class Principal:
    """The caller of an action: a user, whether an admin, and the key it came with (None
    for the operator's direct access to the registry, or the platform's bootstrap)."""

    user: str
    admin: bool
    key_id: Optional[str] = None
    scope: str = "admin"  # the key's: `api` keys only call apps


def principal(registry: Registry, key: str) -> Optional[Principal]:
    """Who a `key_id:secret` belongs to; None for a malformed, unknown or revoked key."""
    found = registry.identify(key)
    if found is None:
        return None
    user, scope = found
    return Principal(user, bool(registry.user(user)), key.strip().partition(":")[0], scope)


def require_manage_scope(who: Principal) -> None:
    """Managing anything takes an `admin`-scope key (fal's scopes); an `api` key only calls apps."""
    if who.scope != "admin":
        raise AccessError(403, "this key has the API scope: it calls apps but manages nothing; use a key with "
                               "the admin scope (`platform keys create --scope admin`)")


def act_as(registry: Registry, who: Principal, requested: Optional[str]) -> str:
    """The user an action is for: the caller, or with an admin's rights any existing user."""
    if requested is None or requested == who.user:
        return who.user
    try:
        check_name("user", requested)
    except InvalidNameError as error:
        raise AccessError(404, str(error)) from None
    if not who.admin:
        raise AccessError(403, f"{who.user} cannot act as {requested}: that needs an admin key")
    if registry.user(requested) is None:
        raise AccessError(404, f"no user {requested!r}: create it with `platform users create {requested}`")
    return requested


def first_admin(registry: Registry, name: str) -> Optional[str]:
    """On a platform with no users yet, `name` becomes its admin: returns that user's first
    key (None when the platform has users already)."""
    if registry.has_users():
        return None
    name = check_name("user", name)
    registry.create_user(name, admin=True)
    return registry.create_key(name, label="bootstrap")


def require_admin(who: Principal) -> None:
    if not who.admin:
        raise AccessError(403, f"{who.user} is not an admin")


class Acting:
    """What every set of control-plane actions shares: its caller, who it may act for, and
    the audit log each change goes to."""

    def __init__(self, registry: Registry, who: Principal) -> None:
        self.registry, self.who = registry, who

    def _record(self, action: str, target: str, **detail: Any) -> None:
        self.registry.record(AuditEntry(self.who.user, action, target, self.who.key_id, detail))

    def _for(self, user: Optional[str]) -> str:
        return act_as(self.registry, self.who, user)


class Accounts(Acting):
    """The account actions of one caller, `who`; `box` seals the secrets they set."""

    def __init__(self, registry: Registry, who: Principal, box: SecretBox) -> None:
        super().__init__(registry, who)
        self._box = box

    # keys

    def create_key(self, user: Optional[str] = None, label: str = "", scope: str = "admin") -> str:
        owner = self._for(user)
        key = self.registry.create_key(owner, label=label, scope=scope)
        self._record("key.create", owner, key_id=key.partition(":")[0], label=label, scope=scope)
        return key

    def list_keys(self, user: Optional[str] = None) -> list[ApiKey]:
        return self.registry.list_keys(self._for(user))

    def revoke_key(self, key_id: str, user: Optional[str] = None) -> None:
        owner = self._for(user)
        try:
            self.registry.revoke_key(owner, key_id)
        except RegistryError as error:
            raise AccessError(404, str(error)) from None
        self._record("key.revoke", owner, key_id=key_id)

    # secrets

    def set_secrets(self, values: dict[str, str], user: Optional[str] = None) -> str:
        owner = self._for(user)
        for name, value in values.items():
            self.registry.set_secret(owner, check_secret_name(name), self._box.seal(value))
        self._record("secret.set", owner, names=sorted(values))
        return owner

    def list_secrets(self, user: Optional[str] = None) -> dict[str, datetime]:
        """{name: updated at}; never the values."""
        return {name: updated for name, (_, updated) in self.registry.secrets(self._for(user)).items()}

    def unset_secret(self, name: str, user: Optional[str] = None) -> str:
        owner = self._for(user)
        if not self.registry.unset_secret(owner, name):
            raise AccessError(404, f"{owner} has no secret {name!r}")
        self._record("secret.unset", owner, name=name)
        return owner

    # users and quotas (admins)

    def create_user(self, name: str, admin: bool = False) -> str:
        """Create a user; returns its first key."""
        require_admin(self.who)
        self.registry.create_user(check_name("user", name), admin=admin)
        key = self.registry.create_key(name, label="first key")
        self._record("user.create", name, admin=admin, key_id=key.partition(":")[0])
        return key

    def list_users(self) -> list[tuple[str, bool]]:
        require_admin(self.who)
        return self.registry.list_users()

    def quota(self, name: str) -> Quota:
        require_admin(self.who)
        if self.registry.user(name) is None:
            raise AccessError(404, f"no user {name!r}")
        return self.registry.quota(name)

    def set_quota(self, name: str, quota: Quota) -> None:
        require_admin(self.who)
        try:
            self.registry.set_quota(name, quota)
        except RegistryError as error:
            raise AccessError(404, str(error)) from None
        self._record("user.quota", name, apps=quota.max_apps, replicas=quota.max_replicas, gpus=quota.max_gpus)

    # the audit log (admins)

    def audit(self, since: Optional[datetime] = None, actor: Optional[str] = None, limit: int = 100) -> list[AuditEntry]:
        require_admin(self.who)
        return self.registry.audit_log(since=since, actor=actor, limit=limit)


def prune_audit(registry: Registry, days: float) -> int:
    """Forget audit entries older than `days`; returns how many."""
    return registry.prune_audit(datetime.now(timezone.utc) - timedelta(days=days))
