"""the database itself refuses changes to audit events and signed reports (SQLite and PostgreSQL)

Until 0002, SQLite stores got triggers from ``make_engine`` and PostgreSQL stores relied on the
app alone. From here both dialects carry them as part of the schema: UPDATE and DELETE (and, on
PostgreSQL, TRUNCATE) of ``audit`` and ``signed_reports`` raise an error naming the rule.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 12:30:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RULES = {"audit": "audit log is append-only", "signed_reports": "signed reports are immutable"}
#: SQLite trigger names as make_engine created them before 0003 (kept, so old stores are not doubled)
SQLITE_PREFIX = {"audit": "audit", "signed_reports": "signed"}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION leukomorph_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        for table, rule in RULES.items():
            op.execute(
                f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION leukomorph_refuse_change('{rule}')"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION leukomorph_refuse_change('{rule}')"
            )
    else:  # SQLite (and any other dialect with SQLite's trigger syntax)
        for table, rule in RULES.items():
            for what in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {SQLITE_PREFIX[table]}_no_{what.lower()} BEFORE {what} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{rule}'); END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in RULES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS leukomorph_refuse_change()")
    else:
        for table in RULES:
            for what in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {SQLITE_PREFIX[table]}_no_{what}")
