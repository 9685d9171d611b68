"""Each user's number, from which the OS user their runners run as is derived.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("number", sa.Integer, nullable=True))
    users = sa.table("users", sa.column("name", sa.String), sa.column("created_at", sa.DateTime),
                     sa.column("number", sa.Integer))
    connection = op.get_bind()
    names = connection.execute(sa.select(users.c.name).order_by(users.c.created_at, users.c.name)).scalars().all()
    for number, name in enumerate(names, start=1):
        connection.execute(sa.update(users).where(users.c.name == name).values(number=number))
    op.create_index("users_by_number", "users", ["number"], unique=True)


def downgrade() -> None:
    op.drop_index("users_by_number", "users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("number")
