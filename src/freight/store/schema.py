"""Tables and numbered migrations of the job store.

Migrations are applied on open, each in its own transaction, and recorded in `schema_migrations`: a store written
by an older freight is brought forward, never rebuilt. Add a migration by appending to MIGRATIONS; never edit one
that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), primary_key=True),
    sa.Column("item_id", sa.String(200), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),  # input order, for stable output
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("signature", sa.String(200), nullable=False, server_default=""),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("output", sa.JSON, nullable=True),  # the validated (possibly merged) output
    sa.Column("error", sa.JSON, nullable=True),  # {kind, message, raw_type} of the final failure
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_items_job_state", "job_id", "state"),
)

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), primary_key=True),
    sa.Column("custom_id", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("parent_custom_id", sa.String(64), nullable=True),
    sa.Column("fix", sa.String(40), nullable=True),
    sa.Column("part", sa.Integer, nullable=True),  # chunk index when a document was split
    sa.Column("parts", sa.Integer, nullable=True),
    # The custom_id whose document was split: every chunk (and every retry of a chunk) carries it, so the parts of
    # one split can be found and merged.
    sa.Column("chunk_group", sa.String(64), nullable=True),
    sa.Column("mode", sa.String(10), nullable=False),  # batch | sync
    # created -> submitted -> done (outcome recorded) -> settled (the outcome has been acted on)
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("batch_id", sa.Integer, sa.ForeignKey("batches.id"), nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),  # the domain Request
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_requests_job_state", "job_id", "state"),
    sa.Index("ix_requests_batch", "batch_id"),
    sa.Index("ix_requests_item", "job_id", "item_id"),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.job_id"), nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("provider_batch_id", sa.String(200), nullable=True, unique=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("counts", sa.JSON, nullable=False),
    sa.Column("n_requests", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=True),
    # Step claims (migration 10, store/step_claims.py): the worker slot polling or ingesting this batch now, until when
    # its claim holds without a heartbeat; when the batch was last polled (by anyone); who ingested it.
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("ingested_by", sa.String(64), nullable=True),
    sa.Index("ix_batches_job_state", "job_id", "state"),
)

outcomes = sa.Table(
    "outcomes",
    metadata,
    # One row per request, ever: the primary key is what makes "exactly one outcome" a database fact.
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("custom_id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("kind", sa.String(40), nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),  # the domain Outcome
    sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cache_write_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cache_read_tokens", sa.Integer, nullable=False, server_default="0"),
    # Cost lives in a column and is summed by a query: never carried around in memory.
    sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("sync_cost_usd", sa.Float, nullable=False, server_default="0"),  # the same work at sync prices
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["job_id", "custom_id"], ["requests.job_id", "requests.custom_id"]),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(60), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_events_job", "job_id", "id"),
)

samples = sa.Table(
    "samples",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("input_key", sa.String(200), nullable=False),  # which corpus was sampled
    sa.Column("prompt_hash", sa.String(64), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Index("ix_samples_input", "input_key", "id"),
)

leases = sa.Table(
    "leases",
    metadata,
    # One row per job while a runner holds it. No foreign key on purpose: the lease is taken before the job's row
    # exists, so two `freight run` started at once never both create and ingest the same job.
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),  # a random token per holder: a restarted pid is another owner
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    # heartbeat + the holder's own ttl: a short-lease worker and a long-lease runner can share the table.
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

notify_outbox = sa.Table(
    "notify_outbox",
    metadata,
    # `freight run --notify URL`: one row per event and URL, written in the transaction of the state change it
    # announces (store/outbox.py), so a crash between the change and the POST loses nothing, and a resumed job that
    # changes no state queues nothing again. Delivered rows stay, as the record of what was sent.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),  # the webhook-id, the same on every retry
    # What makes an event happen once per job however often its cause is seen again (a stuck batch seen on every
    # resume); the event id for events that come with a state change.
    sa.Column("dedupe", sa.String(200), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("type", sa.String(60), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the exact JSON signed and sent, every time
    sa.Column("state", sa.String(20), nullable=False),  # pending | delivered
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("job_id", "dedupe", "url", name="uq_notify_once"),
    sa.Index("ix_notify_pending", "job_id", "state"),
)

job_queue = sa.Table(
    "job_queue",
    metadata,
    # A job recorded by `freight submit` for the workers of this store. `freight run` jobs are not in it: their own
    # process runs them. No foreign key: dropped with the job by hand is fine, and a worker skips a row with no job.
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),  # higher first
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_job_queue_order", "priority", "submitted_at"),
)

workers = sa.Table(
    "workers",
    metadata,
    # One row per live `freight worker` process; its claims are the `leases` whose owner starts with its id.
    sa.Column("worker_id", sa.String(40), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),  # working | stopping
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


def _initial(conn: sa.Connection) -> None:
    for table in (jobs, items, batches, requests, outcomes, events):
        table.create(conn)


def _samples(conn: sa.Connection) -> None:
    samples.create(conn)


def _leases(conn: sa.Connection) -> None:
    leases.create(conn)


def _notify_outbox(conn: sa.Connection) -> None:
    notify_outbox.create(conn)


schedule_submissions = sa.Table(
    "schedule_submissions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),  # the job's RunOptions: enough to open it after a crash
    sa.Column("deadline", sa.Float, nullable=False),  # epoch seconds: the earliest arrival + the SLA
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("done_at", sa.Float, nullable=True),
)

schedule_files = sa.Table(
    "schedule_files",
    metadata,
    # A file is taken once per workflow, ever: the primary key is what makes "exactly once" a database fact.
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("arrived_at", sa.Float, nullable=False),  # its modification time when first seen
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("submission", sa.Integer, sa.ForeignKey("schedule_submissions.id"), nullable=True),
    sa.Index("ix_schedule_files_waiting", "workflow", "submission"),
)


def _schedule(conn: sa.Connection) -> None:
    schedule_submissions.create(conn)
    schedule_files.create(conn)


def _dashboard_indexes(conn: sa.Connection) -> None:
    # freight ui's aggregates over a 100,000-document job read these instead of the wide rows (payloads inline):
    # retries by fix (few rows of many), and outcomes over time with their cost (covering).
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_requests_job_fix ON requests (job_id, fix, item_id)")
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_outcomes_job_time"
        " ON outcomes (job_id, recorded_at, status, cost_usd, sync_cost_usd)"
    )


def _items_in_order(conn: sa.Connection) -> None:
    # results.jsonl, the report and the feed read a job's items page by page in input order (seq > last ORDER BY
    # seq LIMIT 500): without this index each page sorted the whole job again (at 100,000 documents, 12 ms a page).
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_items_job_seq ON items (job_id, seq)")
    # The runner takes pending documents the same way: by state, then in input order, without walking past the
    # documents already in flight.
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_items_job_state_seq ON items (job_id, state, seq)")
    # And results.jsonl's feed reads only the documents that changed since its last append.
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_items_job_updated ON items (job_id, updated_at)")


def _workers(conn: sa.Connection) -> None:
    job_queue.create(conn)
    workers.create(conn)


_STEP_CLAIM_COLUMNS = ("claimed_by", "claim_expires_at", "polled_at", "ingested_by")


def _step_claims(conn: sa.Connection) -> None:
    # A store made by this freight has the columns from `_initial` (which creates tables as defined above): only an
    # older store gains them here.
    have = {c["name"] for c in sa.inspect(conn).get_columns("batches")}
    for name in _STEP_CLAIM_COLUMNS:
        if name not in have:
            column = batches.c[name]
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE batches ADD COLUMN {name} {kind}")
    # Small partial indexes over a store's whole history of batches: the few claimed now (renewed by every worker's
    # heartbeat), and the few not ingested yet (where a slot with no job looks for a batch step).
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_batches_claimed ON batches (claimed_by) WHERE claimed_by IS NOT NULL"
    )
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_batches_open ON batches (id) WHERE ingested_at IS NULL")


# (version, name, step). Append only.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "initial: jobs, items, batches, requests, outcomes, events", _initial),
    (2, "sample runs", _samples),
    (3, "job leases: one runner per job", _leases),
    (4, "workers: a job queue and the live workers that claim from it", _workers),
    (5, "notify outbox: job events for freight run --notify", _notify_outbox),
    (7, "freight schedule: files taken and the jobs they went to", _schedule),
    (9, "dashboard indexes: requests by fix, outcomes by time", _dashboard_indexes),
    (10, "step claims: the worker polling or ingesting a batch, and who ingested it", _step_claims),
    (11, "items in input order: an index for reading a job's items page by page", _items_in_order),
]
