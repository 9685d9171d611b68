"""Queue leases: a running request names the dispatcher that claimed it and until when that
claim holds, so that several dispatchers can share one queue and a dead one's requests go
back in line. Requests running before this revision hold no lease and go back at once.
`cancel_requested` carries a cancel of a running request to the replica that runs it.

Revision ID: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("queued_requests") as batch:
        batch.add_column(sa.Column("dispatcher", sa.String(36)))
        batch.add_column(sa.Column("lease_until", sa.Float))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("queued_requests") as batch:
        batch.drop_column("cancel_requested")
        batch.drop_column("lease_until")
        batch.drop_column("dispatcher")
