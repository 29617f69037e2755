"""The job store: the only truth about a job. Each state change is one transaction.

Every method that changes state opens its own transaction (SQLite: BEGIN IMMEDIATE) and commits before returning,
so whatever acts on a change (submitting, reporting, remediating) only ever sees committed facts. Illegal state
changes raise `IllegalTransition` and change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from pydantic import TypeAdapter

from freight.domain import (
    ITEM_TRANSITIONS,
    JOB_TRANSITIONS,
    FreightError,
    Item,
    ItemState,
    Job,
    JobState,
    Outcome,
    check_transition,
)
from freight.store.db import default_db, make_engine, migrate
from freight.store.outbox import Notification, enqueue
from freight.store.schema import events, items, jobs

_OUTCOME = TypeAdapter[Outcome](Outcome)
_CHUNK = 500


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; everything we write is UTC.
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


class DuplicateOutcome(FreightError):
    """A second outcome for a request that already has one (a result delivered twice)."""


class UnknownRequest(FreightError):
    """An outcome for a custom_id this job never sent."""


class StoreBase:
    """Opening, jobs, items and the event log; `freight.store.work.Store` adds the requests' lifecycle."""

    def __init__(self, db: str | None = None) -> None:
        self.db = db or default_db()
        self.engine = make_engine(self.db)
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> sa.Connection:
        return self.engine.connect().execution_options(freight_read=True)

    def _event(self, conn: sa.Connection, job_id: str | None, kind: str, **data: Any) -> None:
        conn.execute(events.insert().values(job_id=job_id, at=_now(), kind=kind, data=data))

    # --- jobs -------------------------------------------------------------------------------------------------

    def create_job(self, job: Job) -> Job:
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                jobs.insert().values(
                    job_id=job.job_id,
                    name=job.name,
                    state=job.state.value,
                    provider=job.provider,
                    model=job.model,
                    config=job.config,
                    created_at=now,
                    updated_at=now,
                )
            )
            self._event(conn, job.job_id, "job.created", state=job.state.value)
        return job.model_copy(update={"created_at": now})

    def get_job(self, job_id: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(jobs.select().where(jobs.c.job_id == job_id)).mappings().first()
        return _job(row) if row else None

    def list_jobs(self) -> list[Job]:
        with self._read() as conn:
            rows = conn.execute(jobs.select().order_by(jobs.c.created_at.desc())).mappings().all()
        return [_job(r) for r in rows]

    def set_job_state(self, job_id: str, new: JobState, notify: Notification | None = None) -> None:
        """`notify`: the event announcing this change, queued in the same transaction (only when the state changes:
        a resumed job setting the state it already has queues nothing again)."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(jobs.c.state).where(jobs.c.job_id == job_id)).first()
            if row is None:
                raise FreightError(f"no job {job_id!r}: `freight jobs` lists the jobs in this store")
            check_transition(JOB_TRANSITIONS, JobState(row.state), new, f"job {job_id}")
            conn.execute(jobs.update().where(jobs.c.job_id == job_id).values(state=new.value, updated_at=_now()))
            self._event(conn, job_id, "job.state", old=row.state, new=new.value)
            if notify is not None and row.state != new.value:
                enqueue(conn, job_id, notify)

    # --- items ------------------------------------------------------------------------------------------------

    def add_items(self, job_id: str, new_items: Iterable[Item], start: int = 0) -> int:
        """Insert items, in one transaction per call (the caller streams the input a slice at a time, never whole;
        each commit is an fsync, so slices are large), by executemany of 500 rows; returns how many were added."""
        n = 0
        now = _now()
        with self.engine.begin() as conn:
            chunk: list[dict[str, Any]] = []
            for item in new_items:
                chunk.append(
                    dict(
                        job_id=job_id,
                        item_id=item.item_id,
                        seq=start + n,
                        source=item.source,
                        text=item.text,
                        signature=item.signature,
                        state=item.state.value,
                        updated_at=now,
                    )
                )
                n += 1
                if len(chunk) >= _CHUNK:
                    conn.execute(items.insert(), chunk)
                    chunk = []
            if chunk:
                conn.execute(items.insert(), chunk)
        return n

    def delete_items(self, job_id: str) -> None:
        """Drop a job's items (an ingest that a crash cut short is redone from the start)."""
        with self.engine.begin() as conn:
            conn.execute(items.delete().where(items.c.job_id == job_id))

    def get_item(self, job_id: str, item_id: str) -> Item | None:
        with self._read() as conn:
            row = (
                conn.execute(items.select().where(items.c.job_id == job_id, items.c.item_id == item_id))
                .mappings()
                .first()
            )
        return _item(row) if row else None

    def iter_items(self, job_id: str, state: ItemState | None = None, limit: int | None = None) -> Iterator[Item]:
        """Items in input order (the first `limit` of them), fetched page by page."""
        last = -1
        left = limit
        while left is None or left > 0:
            q = items.select().where(items.c.job_id == job_id, items.c.seq > last)
            if state is not None:
                q = q.where(items.c.state == state.value)
            page = _CHUNK if left is None else min(_CHUNK, left)
            with self._read() as conn:
                rows = conn.execute(q.order_by(items.c.seq).limit(page)).mappings().all()
            if not rows:
                return
            for r in rows:
                yield _item(r)
            last = rows[-1]["seq"]
            if left is not None:
                left -= len(rows)

    def item_row(self, job_id: str, item_id: str) -> dict[str, Any]:
        with self._read() as conn:
            row = (
                conn.execute(items.select().where(items.c.job_id == job_id, items.c.item_id == item_id))
                .mappings()
                .first()
            )
        if row is None:
            raise FreightError(f"job {job_id} has no item {item_id!r}")
        return dict(row)

    def set_item_state(
        self, job_id: str, item_id: str, new: ItemState, *, output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        with self.engine.begin() as conn:
            self._set_item_state(conn, job_id, item_id, new, output=output, error=error)

    def _set_item_state(
        self,
        conn: sa.Connection,
        job_id: str,
        item_id: str,
        new: ItemState,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        where = (items.c.job_id == job_id, items.c.item_id == item_id)
        row = conn.execute(sa.select(items.c.state).where(*where)).first()
        if row is None:
            raise FreightError(f"job {job_id} has no item {item_id!r}")
        check_transition(ITEM_TRANSITIONS, ItemState(row.state), new, f"item {item_id}")
        values: dict[str, Any] = {"state": new.value, "updated_at": _now()}
        if output is not None:
            values["output"] = output
        if error is not None:
            values["error"] = error
        conn.execute(items.update().where(*where).values(**values))

    def succeeded_like(self, job_id: str, signature: str, exclude: str, limit: int) -> list[dict[str, Any]]:
        """Items of this signature that already succeeded (for worked examples), oldest first."""
        with self._read() as conn:
            rows = (
                conn.execute(
                    sa.select(items.c.item_id, items.c.text, items.c.output)
                    .where(
                        items.c.job_id == job_id,
                        items.c.state == ItemState.SUCCEEDED.value,
                        items.c.signature == signature,
                        items.c.item_id != exclude,
                    )
                    .order_by(items.c.seq)
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def item_counts(self, job_id: str) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(items.c.state, sa.func.count()).where(items.c.job_id == job_id).group_by(items.c.state)
            ).all()
        return {state: n for state, n in rows}

    # --- events -----------------------------------------------------------------------------------------------

    def log(self, job_id: str | None, kind: str, **data: Any) -> None:
        with self.engine.begin() as conn:
            self._event(conn, job_id, kind, **data)

    def events(self, job_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        q = events.select().order_by(events.c.id)
        if job_id is not None:
            q = q.where(events.c.job_id == job_id)
        if kind is not None:
            q = q.where(events.c.kind == kind)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]


def _job(row: Any) -> Job:
    return Job(
        job_id=row["job_id"],
        name=row["name"],
        state=JobState(row["state"]),
        provider=row["provider"],
        model=row["model"],
        config=row["config"],
        created_at=_aware(row["created_at"]),
    )


def _item(row: Any) -> Item:
    return Item(
        item_id=row["item_id"],
        job_id=row["job_id"],
        source=row["source"],
        text=row["text"],
        state=ItemState(row["state"]),
        signature=row["signature"],
    )
