"""signed reports: the PDF written at sign-out

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no table rebuild): the signed reports already there stay untouched, and
    # SQLite's triggers refusing UPDATE and DELETE on them do not fire
    op.add_column("signed_reports", sa.Column("pdf", sa.LargeBinary(), nullable=True))
    op.add_column("signed_reports", sa.Column("pdf_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signed_reports", schema=None) as batch_op:
        batch_op.drop_column("pdf_sha256")
        batch_op.drop_column("pdf")
