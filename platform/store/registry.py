"""The platform's database: users, API keys, apps and their revisions.

It is the source of truth for what should be serving: after a Ray cluster restart the
platform deploys every app again from here. SQLite in the state directory by default;
`TENANTSERVE_DB` (or `--db`) names any SQLAlchemy URL, PostgreSQL for a multi-node cluster.
The schema is managed by Alembic migrations (`platform/store/migrations/`), applied on open.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Protocol

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tenantserve.platform.core import settings
from tenantserve.platform.core.naming import check_name, check_secret_name, is_valid_app_ref, is_valid_user
from tenantserve.platform.core.settings import state_dir

metadata = MetaData()
users = Table(
    "users", metadata,
    Column("name", String(63), primary_key=True),
    Column("is_admin", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("max_apps", Integer),
    Column("max_replicas", Integer),
    Column("max_gpus", Integer),
    Column("number", Integer, unique=True),  # for the OS user of the user's runners
)
counters = Table(
    "counters", metadata,
    Column("name", String(63), primary_key=True),
    Column("value", Integer, nullable=False),
)
USER_NUMBER = "user_number"  # the last number given to a user
secrets_table = Table(
    "secrets", metadata,
    Column("owner", String(63), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
api_keys = Table(
    "api_keys", metadata,
    Column("key_id", String(64), primary_key=True),
    Column("owner", String(63), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("label", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("scope", String(16), nullable=False, server_default="admin"),
)
apps = Table(
    "apps", metadata,
    Column("owner", String(63), primary_key=True),
    Column("name", String(63), primary_key=True),
    Column("current_revision", String(32), nullable=False),
    Column("auth_mode", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
revisions = Table(
    "revisions", metadata,
    Column("owner", String(63), primary_key=True),
    Column("app", String(63), primary_key=True),
    Column("revision", String(32), primary_key=True),
    Column("bundle", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("actor", String(63), nullable=False),
    Column("key_id", String(64)),
    Column("action", String(63), nullable=False),
    Column("target", String(200), nullable=False),
    Column("detail", Text, nullable=False),
)

# An app joined with the bundle of its current revision.
_current = apps.join(
    revisions,
    (revisions.c.owner == apps.c.owner) & (revisions.c.app == apps.c.name)
    & (revisions.c.revision == apps.c.current_revision),
)
_REVISION = select(revisions.c.owner, revisions.c.app, revisions.c.revision, revisions.c.created_at,
                   revisions.c.bundle)

MIGRATIONS = Path(__file__).parent / "migrations"


class RegistryError(ValueError):
    """A registry action refused: unknown user, revoked key, name taken..."""


def database_url() -> str:
    return settings.DB.get() or f"sqlite:///{state_dir() / 'registry.db'}"


def hash_secret(secret: str) -> str:
    """Key secrets are 256 random bits, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; every stored one is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def make_engine(url: str) -> Engine:
    # A server's connections can drop (a restart, a proxy's idle timeout): each is tested as
    # it is taken from the pool. A SQLite file's cannot, and the test is a statement more
    # in each of the queue's transactions.
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a committed write
            # survives any process crash (what the queue promises), not a power cut.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()
    return engine


def migrate(engine: Engine) -> None:
    # Imported here: replicas open the registry read-only and need not pay for Alembic.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


KEY_SCOPES = ("admin", "api")


@dataclass(frozen=True)
class Quota:
    """A user's limits; None means no limit."""

    max_apps: Optional[int] = None
    max_replicas: Optional[int] = None
    max_gpus: Optional[int] = None


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    owner: str
    label: str
    created_at: datetime
    revoked_at: Optional[datetime]
    scope: str = "admin"


@dataclass(frozen=True)
class AuditEntry:
    """One control-plane action: `actor` did `action` on `target` (`user/app`, `user`, a
    key id...) with key `key_id` (None: the operator's direct access, or the bootstrap)."""

    actor: str
    action: str
    target: str
    key_id: Optional[str] = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: Optional[datetime] = None


class Deployable(Protocol):
    """What the registry reads of a bundle it stores; the adapter owns the bundle's format."""

    owner: str
    app_name: str

    @property
    def revision(self) -> str: ...

    @property
    def auth_mode(self) -> str: ...

    def to_json(self) -> str: ...


@dataclass(frozen=True)
class Registered:
    """One stored revision of an app; `bundle` is the adapter's JSON, read back by the adapter."""

    owner: str
    app: str
    revision: str
    created_at: datetime
    bundle: str


class Registry:
    def __init__(self, url: Optional[str] = None, *, migrate_schema: bool = True) -> None:
        self.url = url or database_url()
        self.engine = make_engine(self.url)
        if migrate_schema:
            migrate(self.engine)

    # users and keys

    def create_user(self, name: str, admin: bool = False) -> None:
        check_name("user", name)
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(users.c.name).where(users.c.name == name)).first():
                    raise RegistryError(f"user {name!r} exists already")
                # The counter's row lock orders users created at the same time.
                number = conn.execute(update(counters).where(counters.c.name == USER_NUMBER)
                                      .values(value=counters.c.value + 1).returning(counters.c.value)).scalar_one()
                conn.execute(users.insert().values(name=name, is_admin=admin, created_at=_now(), number=number))
        except IntegrityError:
            raise RegistryError(f"user {name!r} exists already") from None

    def user_number(self, name: str) -> Optional[int]:
        """The user's number (1, 2, ...: never reused), from which their runners' OS user comes."""
        with self.engine.connect() as conn:
            return conn.execute(select(users.c.number).where(users.c.name == name)).scalar()

    def user(self, name: str) -> Optional[bool]:
        """None if there is no such user, else whether the user is an admin."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users.c.is_admin).where(users.c.name == name)).first()
        return None if row is None else bool(row.is_admin)

    def has_users(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(users.c.name).limit(1)).first() is not None

    def list_users(self) -> list[tuple[str, bool]]:
        with self.engine.connect() as conn:
            return [(r.name, bool(r.is_admin)) for r in conn.execute(select(users).order_by(users.c.name))]

    def create_key(self, owner: str, label: str = "", scope: str = "admin") -> str:
        """A new key for `owner`; returns `key_id:secret`, the only time the secret is seen.
        `scope`: `admin` (manages the owner's things too) or `api` (only calls apps)."""
        if self.user(owner) is None:
            raise RegistryError(f"no user {owner!r}")
        if scope not in KEY_SCOPES:
            raise RegistryError(f"no key scope {scope!r}: use one of {', '.join(KEY_SCOPES)}")
        key_id, secret = str(uuid.uuid4()), secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(
                key_id=key_id, owner=owner, secret_hash=hash_secret(secret), label=label, created_at=_now(),
                scope=scope,
            ))
        return f"{key_id}:{secret}"

    def list_keys(self, owner: str) -> list[ApiKey]:
        query = select(api_keys).where(api_keys.c.owner == owner).order_by(api_keys.c.created_at)
        with self.engine.connect() as conn:
            return [
                ApiKey(r.key_id, r.owner, r.label, r.created_at, r.revoked_at, r.scope) for r in conn.execute(query)
            ]

    def revoke_key(self, owner: str, key_id: str) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.owner == owner, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
        if result.rowcount == 0:
            raise RegistryError(f"{owner} has no active key {key_id}")

    def record(self, entry: AuditEntry) -> None:
        with self.engine.begin() as conn:
            conn.execute(audit.insert().values(
                at=entry.at or _now(), actor=entry.actor, key_id=entry.key_id, action=entry.action,
                target=entry.target[:200], detail=json.dumps(entry.detail, sort_keys=True),
            ))

    def audit_log(self, *, since: Optional[datetime] = None, actor: Optional[str] = None,
                  limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` entries (since `since`, by `actor`), oldest first."""
        query = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if since is not None:
            query = query.where(audit.c.at >= since)
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        return [AuditEntry(r.actor, r.action, r.target, r.key_id, json.loads(r.detail), _aware(r.at))
                for r in reversed(rows)]

    def prune_audit(self, before: datetime) -> int:
        """Forget entries older than `before`; returns how many."""
        with self.engine.begin() as conn:
            return conn.execute(delete(audit).where(audit.c.at < before)).rowcount

    def authenticate(self, key: str) -> Optional[str]:
        """The user a `key_id:secret` belongs to, or None for a malformed, unknown or revoked key."""
        found = self.identify(key)
        return found[0] if found else None

    def identify(self, key: str) -> Optional[tuple[str, str]]:
        """(owner, scope) of a `key_id:secret`, or None for a malformed, unknown or revoked key."""
        key_id, sep, secret = key.strip().partition(":")
        if not sep or not secret:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.owner, api_keys.c.secret_hash, api_keys.c.scope)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            ).first()
        if row is None or not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
            return None
        return row.owner, row.scope

    # quotas and secrets

    def quota(self, owner: str) -> Quota:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users.c.max_apps, users.c.max_replicas, users.c.max_gpus).where(users.c.name == owner)
            ).first()
        return Quota(*row) if row else Quota()

    def set_quota(self, owner: str, quota: Quota) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(update(users).where(users.c.name == owner).values(
                max_apps=quota.max_apps, max_replicas=quota.max_replicas, max_gpus=quota.max_gpus,
            ))
        if result.rowcount == 0:
            raise RegistryError(f"no user {owner!r}")

    def set_secret(self, owner: str, name: str, sealed: str) -> None:
        check_secret_name(name)
        key = (secrets_table.c.owner == owner) & (secrets_table.c.name == name)
        with self.engine.begin() as conn:
            conn.execute(delete(secrets_table).where(key))
            conn.execute(secrets_table.insert().values(owner=owner, name=name, value=sealed, updated_at=_now()))

    def unset_secret(self, owner: str, name: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(secrets_table).where(secrets_table.c.owner == owner, secrets_table.c.name == name)
            )
        return result.rowcount > 0

    def secrets(self, owner: str) -> dict[str, tuple[str, datetime]]:
        """{name: (sealed value, updated at)} of a user's secrets."""
        query = select(secrets_table).where(secrets_table.c.owner == owner).order_by(secrets_table.c.name)
        with self.engine.connect() as conn:
            return {r.name: (r.value, r.updated_at) for r in conn.execute(query)}

    # apps and revisions

    def get(self, owner: str, name: str) -> Optional[Registered]:
        """The app's serving revision."""
        query = _REVISION.select_from(_current).where(apps.c.owner == owner, apps.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return Registered(*row) if row else None

    def revisions(self, owner: str, name: str) -> list[Registered]:
        """Every revision of an app, oldest first."""
        query = _REVISION.where(revisions.c.owner == owner, revisions.c.app == name).order_by(revisions.c.created_at)
        with self.engine.connect() as conn:
            return [Registered(*row) for row in conn.execute(query)]

    def put(self, bundle: Deployable) -> None:
        """Record a deployed bundle as its app's current revision."""
        check_name("user", bundle.owner)
        check_name("app", bundle.app_name)
        now = _now()
        key = (apps.c.owner == bundle.owner) & (apps.c.name == bundle.app_name)
        values = {"current_revision": bundle.revision, "auth_mode": bundle.auth_mode, "updated_at": now}
        with self.engine.begin() as conn:
            if conn.execute(select(apps.c.name).where(key)).first():
                conn.execute(update(apps).where(key).values(**values))
            else:
                conn.execute(apps.insert().values(owner=bundle.owner, name=bundle.app_name, **values))
            known = conn.execute(select(revisions.c.revision).where(
                revisions.c.owner == bundle.owner, revisions.c.app == bundle.app_name,
                revisions.c.revision == bundle.revision,
            )).first()
            if not known:
                conn.execute(revisions.insert().values(
                    owner=bundle.owner, app=bundle.app_name, revision=bundle.revision,
                    bundle=bundle.to_json(), created_at=now,
                ))

    def delete(self, owner: str, name: str) -> bool:
        with self.engine.begin() as conn:
            conn.execute(delete(revisions).where(revisions.c.owner == owner, revisions.c.app == name))
            result = conn.execute(delete(apps).where(apps.c.owner == owner, apps.c.name == name))
        return result.rowcount > 0

    def list(self, owner: Optional[str] = None) -> list[Registered]:
        """Every app's serving revision, by owner and name."""
        query = _REVISION.select_from(_current).order_by(apps.c.owner, apps.c.name)
        if owner is not None:
            query = query.where(apps.c.owner == owner)
        with self.engine.connect() as conn:
            return [Registered(*row) for row in conn.execute(query)]

    # names stored before the rules were enforced

    def invalid_names(self) -> "InvalidNames":
        """What the registry holds under names its rules refuse (from before they were
        checked at every entry): such apps cannot be routed, listed or deleted by name."""
        with self.engine.connect() as conn:
            user_names = [r.name for r in conn.execute(select(users.c.name))]
            app_refs = [(r.owner, r.name) for r in conn.execute(select(apps.c.owner, apps.c.name))]
            secret_refs = [(r.owner, r.name) for r in conn.execute(select(secrets_table.c.owner, secrets_table.c.name))]
        bad_users = sorted(name for name in user_names if not is_valid_user(name))
        return InvalidNames(
            users=bad_users,
            apps=sorted(ref for ref in app_refs if ref[0] in bad_users or not is_valid_app_ref(*ref)),
            secrets=sorted(ref for ref in secret_refs if ref[0] in bad_users or not _valid_secret(ref[1])),
        )

    def purge(self, found: "InvalidNames") -> None:
        """Remove what `invalid_names` found: those apps with their revisions, those
        secrets, and those users with their keys, secrets and apps."""
        with self.engine.begin() as conn:
            for owner, name in found.apps:
                conn.execute(delete(revisions).where(revisions.c.owner == owner, revisions.c.app == name))
                conn.execute(delete(apps).where(apps.c.owner == owner, apps.c.name == name))
            for owner, name in found.secrets:
                conn.execute(delete(secrets_table).where(secrets_table.c.owner == owner, secrets_table.c.name == name))
            for name in found.users:
                conn.execute(delete(revisions).where(revisions.c.owner == name))
                conn.execute(delete(apps).where(apps.c.owner == name))
                conn.execute(delete(secrets_table).where(secrets_table.c.owner == name))
                conn.execute(delete(api_keys).where(api_keys.c.owner == name))
                conn.execute(delete(users).where(users.c.name == name))


def _valid_secret(name: str) -> bool:
    try:
        check_secret_name(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class InvalidNames:
    users: list[str]
    apps: list[tuple[str, str]]
    secrets: list[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.users or self.apps or self.secrets)
