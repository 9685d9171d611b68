"""The request queue: every request submitted to /queue, its state, result and webhook.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "queued_requests",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("owner", sa.String(63), nullable=False),
        sa.Column("app", sa.String(63), nullable=False),
        sa.Column("caller", sa.String(63)),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float),
        sa.Column("status_code", sa.Integer),
        sa.Column("result", sa.Text),
        sa.Column("logs", sa.Text, nullable=False),
        sa.Column("webhook_url", sa.Text),
        sa.Column("webhook_state", sa.String(16)),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("queued_requests_by_app", "queued_requests", ["owner", "app", "status", "seq"])
    op.create_index("queued_requests_by_status", "queued_requests", ["status", "seq"])


def downgrade() -> None:
    op.drop_table("queued_requests")
