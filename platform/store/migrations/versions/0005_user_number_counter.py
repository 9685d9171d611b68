"""A counter that hands out users' numbers, so that a number stays given after its user
is removed (`users clean-names`): a new user never gets the OS user of a removed one.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    users = sa.table("users", sa.column("number", sa.Integer))
    highest = op.get_bind().execute(sa.select(sa.func.max(users.c.number))).scalar() or 0
    op.bulk_insert(counters, [{"name": "user_number", "value": highest}])


def downgrade() -> None:
    op.drop_table("counters")
