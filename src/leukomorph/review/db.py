"""Review store: SQLAlchemy models (SQLite by default, PostgreSQL by URL) and session factory.

Audit events are append-only and signed reports immutable: the API never updates or deletes them,
and triggers in the schema (Alembic revision 0003, SQLite and PostgreSQL) make the database refuse
it too.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

__all__ = [
    "AuditEvent",
    "Base",
    "Case",
    "Cell",
    "Field",
    "LoginSession",
    "SignedReport",
    "User",
    "finding_keys",
    "make_engine",
    "now",
]

ROLES = ("technologist", "hematologist", "admin")


def finding_keys(findings: str | None) -> list[str]:
    """The finding keys of a cell's ``findings`` column ("|"-joined; empty: none)."""
    return [f for f in (findings or "").split("|") if f]


def now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class LoginSession(Base):
    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    csrf: Mapped[str] = mapped_column(String(64))
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    user: Mapped[User] = relationship()


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    imported: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | signed
    results: Mapped[dict] = mapped_column(JSON)  # results.json of the analysis, as imported
    #: the analysis's report.html, stored at import (revision 0005; None before, or when absent)
    report_file: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cells: Mapped[list[Cell]] = relationship(back_populates="case", order_by="Cell.id")
    fields: Mapped[list[Field]] = relationship(back_populates="case", order_by="Field.id")


class Field(Base):
    """A smear field (or slide tile) of a field-mode case, stored so that a reviewer can draw a box
    around a white cell the detector missed (Alembic revision 0005; cases imported before have none)."""

    __tablename__ = "fields"
    __table_args__ = (UniqueConstraint("case_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    name: Mapped[str] = mapped_column(Text)  # the field's path as analyze gave it
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_file: Mapped[str] = mapped_column(String(200))  # relative to the store's image folder
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    case: Mapped[Case] = relationship(back_populates="fields")


class Cell(Base):
    __tablename__ = "cells"
    __table_args__ = (UniqueConstraint("case_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    path: Mapped[str] = mapped_column(Text)  # input path as given to analyze
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_file: Mapped[str] = mapped_column(String(200))  # relative to the store's image folder
    predicted: Mapped[str] = mapped_column(String(40))
    confidence: Mapped[float] = mapped_column(Float)
    prediction_set: Mapped[str] = mapped_column(String(400), default="")
    review_flag: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str | None] = mapped_column(String(40), nullable=True)  # reviewer's class
    reviewed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    #: morphological findings the reviewer recorded (keys of leukomorph.taxonomy.FINDINGS, "|"-joined)
    findings: Mapped[str] = mapped_column(String(200), default="", server_default="")
    #: the field the cell was detected in (or drawn on by a reviewer) and its box there,
    #: "x0,y0,x1,y1" in field pixels (revision 0005; None for crops and older imports)
    field_id: Mapped[int | None] = mapped_column(ForeignKey("fields.id"), nullable=True, index=True)
    box: Mapped[str | None] = mapped_column(String(64), nullable=True)
    case: Mapped[Case] = relationship(back_populates="cells")
    field: Mapped[Field | None] = relationship()

    @property
    def box_xyxy(self) -> tuple[int, int, int, int] | None:
        return tuple(int(v) for v in self.box.split(",")) if self.box else None  # type: ignore[return-value]

    @property
    def finding_list(self) -> list[str]:
        return finding_keys(self.findings)

    @property
    def current(self) -> str:
        return self.label or self.predicted


class AuditEvent(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    username: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True, index=True)
    cell_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(40))
    before: Mapped[str] = mapped_column(Text, default="")
    after: Mapped[str] = mapped_column(Text, default="")


class SignedReport(Base):
    __tablename__ = "signed_reports"
    __table_args__ = (UniqueConstraint("case_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    version: Mapped[int] = mapped_column(Integer)
    signed_by: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    html: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    #: the same report as PDF, written at sign-out (None for reports signed before v0.9)
    pdf: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


def migrate(engine) -> None:
    """Bring the schema to the newest Alembic revision (creates it in an empty database)."""
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("leukomorph.review") / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def make_engine(url: str):
    """Engine + session factory, the schema migrated to head; SQLite gets WAL and foreign keys."""
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30} if is_sqlite else {})
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # pragma: no cover - trivial
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across crashes of the app, fast commits
            cur.close()

    migrate(engine)  # the schema's triggers refuse changes to audit events and signed reports
    return engine, sessionmaker(engine, expire_on_commit=False)
