"""cells: the morphological findings a reviewer records on a cell (Auer rods, faggot cell, ...)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN with a default: the cells already there get no findings
    op.add_column("cells", sa.Column("findings", sa.String(length=200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.drop_column("findings")
