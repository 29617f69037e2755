"""The server's state in SQLite (SQLAlchemy Core): batches, their requests row by row, files in chunks, markers seen,
and the log of received requests. A restart loses nothing: every state change is a committed row.

One writer: every write goes through `Store.write()`, which serializes on a lock and takes SQLite's write lock up
front (BEGIN IMMEDIATE); readers use their own connections and never wait for it (WAL).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # creation order, for listing
    sa.Column("id", sa.String, nullable=False, unique=True),
    sa.Column("dialect", sa.String, nullable=False),  # "anthropic" | "openai"
    sa.Column("state", sa.String, nullable=False),  # a domain.BatchState value
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("start_at", sa.Float, nullable=False),  # when work may begin (after validation / queueing)
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("in_progress_at", sa.Float),
    sa.Column("finalizing_at", sa.Float),
    sa.Column("finalize_until", sa.Float),
    sa.Column("cancel_initiated_at", sa.Float),
    sa.Column("cancel_until", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("total", sa.Integer, nullable=False, default=0),
    sa.Column("n_succeeded", sa.Integer, nullable=False, default=0),
    sa.Column("n_errored", sa.Integer, nullable=False, default=0),
    sa.Column("n_canceled", sa.Integer, nullable=False, default=0),
    sa.Column("n_expired", sa.Integer, nullable=False, default=0),
    sa.Column("input_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("output_tokens", sa.Integer, nullable=False, default=0),
    # OpenAI only.
    sa.Column("input_file_id", sa.String),
    sa.Column("output_file_id", sa.String),
    sa.Column("error_file_id", sa.String),
    sa.Column("endpoint", sa.String),
    sa.Column("completion_window", sa.String),
    sa.Column("metadata", sa.JSON),
    sa.Column("model", sa.String),
    sa.Column("errors", sa.JSON),  # validation errors of a failed batch
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("batch_id", sa.String, primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),  # position in the input (0-based)
    sa.Column("custom_id", sa.String, nullable=False),
    # Results come back in this pseudo-random order, never the input order, as with the real services.
    sa.Column("order_key", sa.BigInteger, nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # the request body as received (JSON text)
    sa.Column("state", sa.String, nullable=False, default="pending"),  # pending | running | done
    sa.Column("outcome", sa.Text),  # a domain Outcome as JSON, once done
    sa.Column("response_id", sa.String),  # msg_… / chatcmpl-… id of a succeeded outcome
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_requests_pending", "batch_id", "state", "order_key"),
    sa.Index("ix_requests_order", "batch_id", "order_key"),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String, nullable=False, unique=True),
    sa.Column("purpose", sa.String, nullable=False),
    sa.Column("filename", sa.String, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # An uploaded file's bytes live in file_chunks; a batch's output / error file is produced from its request rows.
    sa.Column("batch_id", sa.String),
    sa.Column("kind", sa.String, nullable=False),  # upload | output | error
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

file_chunks = sa.Table(
    "file_chunks",
    metadata,
    sa.Column("file_id", sa.String, primary_key=True),
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

markers = sa.Table(
    "markers",
    metadata,
    sa.Column("marker", sa.String, primary_key=True),
    sa.Column("first_seen_at", sa.Float, nullable=False),
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dialect", sa.String, nullable=False),
    sa.Column("batch_id", sa.String),
    sa.Column("custom_id", sa.String),
    sa.Column("received_at", sa.Float, nullable=False),
)

# Batch webhooks (`freight serve --webhook URL`): one row per event and URL, written in the transaction that ends the
# batch (an outbox: a crash never loses one), and every delivery attempt. See server/webhooks.py.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String, nullable=False),  # the webhook-id: the same on every retry
    sa.Column("url", sa.String, nullable=False),
    sa.Column("type", sa.String, nullable=False),  # batch.completed | batch.failed | batch.expired | batch.cancelled
    sa.Column("batch_id", sa.String, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # the exact bytes signed and sent, every time
    sa.Column("state", sa.String, nullable=False, default="pending"),  # pending | delivered | gave_up
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float),
    sa.UniqueConstraint("batch_id", "url"),
    sa.Index("ix_webhook_due", "state", "next_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery", sa.Integer, nullable=False),  # webhook_deliveries.seq
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("status", sa.Integer),  # the receiver's HTTP status; None when it did not answer
    sa.Column("error", sa.String),
)

# Token-counting calls, kept apart from `records` (inference): a dry run shows up here and nowhere else.
counts = sa.Table(
    "counts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dialect", sa.String, nullable=False),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite defers BEGIN on its own; we issue it ourselves so the writer takes the lock up front.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(self.engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("writer") else "BEGIN")

        metadata.create_all(self.engine)

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self._lock, self.engine.connect() as conn:
            conn.info["writer"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info["writer"] = False

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def claim_markers(self, texts: list[str], now: float) -> set[str]:
        """Record these markers as seen; return the ones seen here for the first time (durably, across restarts)."""
        fresh: set[str] = set()
        if not texts:
            return fresh
        with self.write() as conn:
            for text in texts:
                res = conn.execute(sa.insert(markers).prefix_with("OR IGNORE").values(marker=text, first_seen_at=now))
                if res.rowcount == 1:
                    fresh.add(text)
        return fresh

    def record(
        self, conn: sa.Connection, dialect: str, batch_id: str | None, custom_ids: list[str | None], now: float
    ) -> None:
        if custom_ids:
            conn.execute(
                sa.insert(records),
                [{"dialect": dialect, "batch_id": batch_id, "custom_id": c, "received_at": now} for c in custom_ids],
            )

    def records(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(sa.select(records).order_by(records.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def record_count(self, dialect: str, model: str, input_tokens: int, now: float) -> None:
        with self.write() as conn:
            conn.execute(
                sa.insert(counts).values(dialect=dialect, model=model, input_tokens=input_tokens, received_at=now)
            )

    def counts(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(sa.select(counts).order_by(counts.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def close(self) -> None:
        self.engine.dispose()
