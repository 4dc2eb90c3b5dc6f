"""fields: the smear fields of a field-mode case, and each cell's field and box, so that a reviewer
can draw a box around a white cell the detector missed; cases: the analysis's report.html

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fields",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("image_file", sa.String(length=200), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.UniqueConstraint("case_id", "name"),
    )
    op.create_index("ix_fields_case_id", "fields", ["case_id"])
    # plain ADD COLUMN (nullable): rebuilding cases would fight the foreign keys that point at it
    op.add_column("cases", sa.Column("report_file", sa.String(length=200), nullable=True))
    # cells already there keep NULL: crops, and field cells imported before 0005 (no field stored)
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.add_column(sa.Column("field_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("box", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key("fk_cells_field_id", "fields", ["field_id"], ["id"])
        batch_op.create_index("ix_cells_field_id", ["field_id"])


def downgrade() -> None:
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.drop_index("ix_cells_field_id")
        batch_op.drop_constraint("fk_cells_field_id", type_="foreignkey")
        batch_op.drop_column("box")
        batch_op.drop_column("field_id")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("report_file")
    op.drop_index("ix_fields_case_id", table_name="fields")
    op.drop_table("fields")
