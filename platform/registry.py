"""The platform's record of deployed apps: the source of truth for what should be serving.

SQLite in the state directory unless `TENANTSERVE_DB` gives another SQLAlchemy URL
(PostgreSQL for a multi-node cluster).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, create_engine, delete, select
from sqlalchemy.engine import Engine

from tenantserve.adapters.fal.bundle import AppBundle

from .cluster import state_dir

metadata = MetaData()

apps = Table(
    "apps",
    metadata,
    Column("owner", String(63), primary_key=True),
    Column("name", String(63), primary_key=True),
    Column("revision", String(32), nullable=False),
    Column("bundle", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def database_url() -> str:
    return os.environ.get("TENANTSERVE_DB") or f"sqlite:///{state_dir() / 'registry.db'}"


class Registry:
    def __init__(self, url: Optional[str] = None) -> None:
        self.engine: Engine = create_engine(url or database_url())
        metadata.create_all(self.engine)

    def get(self, owner: str, name: str) -> Optional[AppBundle]:
        with self.engine.connect() as conn:
            row = conn.execute(select(apps.c.bundle).where(apps.c.owner == owner, apps.c.name == name)).first()
        return AppBundle.from_json(row.bundle) if row else None

    def put(self, bundle: AppBundle) -> None:
        values = {
            "revision": bundle.revision,
            "bundle": bundle.to_json(),
            "updated_at": datetime.now(timezone.utc),
        }
        with self.engine.begin() as conn:
            conn.execute(delete(apps).where(apps.c.owner == bundle.owner, apps.c.name == bundle.app_name))
            conn.execute(apps.insert().values(owner=bundle.owner, name=bundle.app_name, **values))

    def delete(self, owner: str, name: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(apps).where(apps.c.owner == owner, apps.c.name == name))
        return result.rowcount > 0

    def list(self, owner: Optional[str] = None) -> list[AppBundle]:
        query = select(apps.c.bundle).order_by(apps.c.owner, apps.c.name)
        if owner is not None:
            query = query.where(apps.c.owner == owner)
        with self.engine.connect() as conn:
            return [AppBundle.from_json(row.bundle) for row in conn.execute(query)]
