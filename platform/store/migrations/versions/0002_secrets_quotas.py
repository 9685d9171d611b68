"""Per-user secrets (encrypted) and quotas.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("owner", sa.String(63), sa.ForeignKey("users.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("max_apps", sa.Integer, nullable=True))
        batch.add_column(sa.Column("max_replicas", sa.Integer, nullable=True))
        batch.add_column(sa.Column("max_gpus", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for column in ("max_apps", "max_replicas", "max_gpus"):
            batch.drop_column(column)
    op.drop_table("secrets")
