"""Opening a store: where it lives, how SQLite is set up, and migrations applied on open."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from freight.store.schema import MIGRATIONS, schema_migrations


def freight_home() -> Path:
    return Path(os.environ.get("FREIGHT_HOME") or Path.home() / ".freight")


def default_db() -> str:
    """`FREIGHT_DB` (a path or a URL), else `$FREIGHT_HOME/freight.db`."""
    return os.environ.get("FREIGHT_DB") or str(freight_home() / "freight.db")


def to_url(db: str) -> str:
    """A path or URL as given by a user, as a SQLAlchemy URL."""
    if db.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver we test against.
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    if "://" in db:
        return db
    path = Path(db).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_setup(engine: sa.Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and never takes the write lock up front; we issue
    # BEGIN IMMEDIATE ourselves so two writers serialize on the lock instead of failing on upgrade (SQLAlchemy's
    # documented recipe for SQLite).
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # an acknowledged outcome survives a crash of the machine too
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Readers (marked by Store._read) take no lock: WAL lets them run beside the one writer.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("freight_read") else "BEGIN IMMEDIATE")


def make_engine(db: str, **kwargs: Any) -> sa.Engine:
    url = to_url(db)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_setup(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


_MIGRATION_LOCK = 7_201_553  # any constant: the Postgres advisory lock two freights opening one store share


def _serialize(conn: sa.Connection) -> None:
    """Two processes opening a new store at once take turns (SQLite's BEGIN IMMEDIATE already does this)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})


def migrate(engine: sa.Engine) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    with engine.begin() as conn:
        _serialize(conn)
        schema_migrations.create(conn, checkfirst=True)
    applied: list[int] = []
    for version, name, step in MIGRATIONS:
        # Each migration and its record commit together: a crash leaves it either fully applied or not at all.
        with engine.begin() as conn:
            _serialize(conn)
            done = conn.execute(
                sa.select(schema_migrations.c.version).where(schema_migrations.c.version == version)
            ).first()
            if done:
                continue
            step(conn)
            conn.execute(schema_migrations.insert().values(version=version, name=name, applied_at=datetime.now(UTC)))
            applied.append(version)
    return applied
