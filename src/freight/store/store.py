"""The job store: the only truth about a job. Each state change is one transaction.

Every method that changes state opens its own transaction (SQLite: BEGIN IMMEDIATE) and commits before returning,
so whatever acts on a change (submitting, reporting, remediating) only ever sees committed facts. Illegal state
changes raise `IllegalTransition` and change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter

from freight.domain import (
    BATCH_TRANSITIONS,
    ITEM_TRANSITIONS,
    JOB_TRANSITIONS,
    Batch,
    BatchState,
    Errored,
    FreightError,
    Item,
    ItemState,
    Job,
    JobState,
    Outcome,
    Request,
    RequestCounts,
    Succeeded,
    check_transition,
)
from freight.store.db import default_db, make_engine, migrate
from freight.store.schema import batches, events, items, jobs, outcomes, requests

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


class Store:
    def __init__(self, db: str | None = None) -> None:
        self.db = db or default_db()
        self.engine = make_engine(self.db)
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
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

    def set_job_state(self, job_id: str, new: JobState) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(jobs.c.state).where(jobs.c.job_id == job_id)).first()
            if row is None:
                raise FreightError(f"no job {job_id!r}: `freight jobs` lists the jobs in this store")
            check_transition(JOB_TRANSITIONS, JobState(row.state), new, f"job {job_id}")
            conn.execute(jobs.update().where(jobs.c.job_id == job_id).values(state=new.value, updated_at=_now()))
            self._event(conn, job_id, "job.state", old=row.state, new=new.value)

    # --- items ------------------------------------------------------------------------------------------------

    def add_items(self, job_id: str, new_items: Iterable[Item]) -> int:
        """Insert items in chunks (the input is streamed, never held whole); returns how many were added."""
        n = 0
        chunk: list[dict[str, Any]] = []
        for item in new_items:
            chunk.append(
                dict(
                    job_id=job_id,
                    item_id=item.item_id,
                    seq=n,
                    source=item.source,
                    text=item.text,
                    signature=item.signature,
                    state=item.state.value,
                    updated_at=_now(),
                )
            )
            n += 1
            if len(chunk) >= _CHUNK:
                self._insert_items(chunk)
                chunk = []
        if chunk:
            self._insert_items(chunk)
        return n

    def _insert_items(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(items.insert(), rows)

    def get_item(self, job_id: str, item_id: str) -> Item | None:
        with self._read() as conn:
            row = (
                conn.execute(items.select().where(items.c.job_id == job_id, items.c.item_id == item_id))
                .mappings()
                .first()
            )
        return _item(row) if row else None

    def iter_items(self, job_id: str, state: ItemState | None = None) -> Iterator[Item]:
        """Items in input order, fetched page by page."""
        last = -1
        while True:
            q = items.select().where(items.c.job_id == job_id, items.c.seq > last)
            if state is not None:
                q = q.where(items.c.state == state.value)
            with self._read() as conn:
                rows = conn.execute(q.order_by(items.c.seq).limit(_CHUNK)).mappings().all()
            if not rows:
                return
            for r in rows:
                yield _item(r)
            last = rows[-1]["seq"]

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

    def item_counts(self, job_id: str) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(items.c.state, sa.func.count()).where(items.c.job_id == job_id).group_by(items.c.state)
            ).all()
        return {state: n for state, n in rows}

    # --- requests ---------------------------------------------------------------------------------------------

    def add_requests(
        self, job_id: str, reqs: Iterable[Request], mode: str = "batch", parts: dict[str, tuple[int, int]] | None = None
    ) -> None:
        """Record requests before they are sent, and move their items in flight, in one transaction.

        Recording first is what lets a resumed run recognize its own work: a request is never built twice.
        """
        now = _now()
        with self.engine.begin() as conn:
            moved: set[str] = set()
            for r in reqs:
                part = (parts or {}).get(r.custom_id)
                conn.execute(
                    requests.insert().values(
                        job_id=job_id,
                        custom_id=r.custom_id,
                        item_id=r.item_id or "",
                        attempt=r.attempt,
                        parent_custom_id=r.parent_custom_id,
                        fix=r.fix,
                        part=part[0] if part else None,
                        parts=part[1] if part else None,
                        mode=mode,
                        state="created",
                        payload=r.model_dump(mode="json"),
                        created_at=now,
                    )
                )
                if r.item_id and r.item_id not in moved:
                    row = conn.execute(
                        sa.select(items.c.state).where(items.c.job_id == job_id, items.c.item_id == r.item_id)
                    ).first()
                    if row is not None and row.state != ItemState.IN_FLIGHT.value:
                        self._set_item_state(conn, job_id, r.item_id, ItemState.IN_FLIGHT)
                    moved.add(r.item_id)

    def get_request(self, job_id: str, custom_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = (
                conn.execute(requests.select().where(requests.c.job_id == job_id, requests.c.custom_id == custom_id))
                .mappings()
                .first()
            )
        return _request_row(row) if row else None

    def requests_where(self, job_id: str, **filters: Any) -> list[dict[str, Any]]:
        q = requests.select().where(requests.c.job_id == job_id)
        for col, value in filters.items():
            q = q.where(requests.c[col].is_(None) if value is None else requests.c[col] == value)
        with self._read() as conn:
            rows = conn.execute(q.order_by(requests.c.created_at, requests.c.custom_id)).mappings().all()
        return [_request_row(r) for r in rows]

    def iter_pending_requests(self, job_id: str, mode: str = "batch") -> Iterator[Request]:
        """Requests recorded but not yet in any batch, streamed page by page."""
        last = ""
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    sa.select(requests.c.custom_id, requests.c.payload)
                    .where(
                        requests.c.job_id == job_id,
                        requests.c.state == "created",
                        requests.c.mode == mode,
                        requests.c.batch_id.is_(None),
                        requests.c.custom_id > last,
                    )
                    .order_by(requests.c.custom_id)
                    .limit(_CHUNK)
                ).all()
            if not rows:
                return
            for row in rows:
                yield Request.model_validate(row.payload)
            last = rows[-1].custom_id

    # --- batches ----------------------------------------------------------------------------------------------

    def create_batch(self, job_id: str, provider: str, custom_ids: list[str]) -> int:
        """Record a batch as `preparing` and claim its requests, before anything is sent to the provider."""
        with self.engine.begin() as conn:
            batch_id = conn.execute(
                batches.insert().values(
                    job_id=job_id,
                    provider=provider,
                    state=BatchState.PREPARING.value,
                    counts=RequestCounts(processing=len(custom_ids)).model_dump(),
                    n_requests=len(custom_ids),
                    created_at=_now(),
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            for start in range(0, len(custom_ids), _CHUNK):
                conn.execute(
                    requests.update()
                    .where(requests.c.job_id == job_id, requests.c.custom_id.in_(custom_ids[start : start + _CHUNK]))
                    .values(batch_id=batch_id)
                )
            self._event(conn, job_id, "batch.prepared", batch=batch_id, requests=len(custom_ids))
        return int(batch_id)

    def mark_submitted(self, local_id: int, batch: Batch) -> None:
        with self.engine.begin() as conn:
            row = self._batch_row(conn, local_id)
            check_transition(BATCH_TRANSITIONS, BatchState(row["state"]), BatchState.SUBMITTED, f"batch {local_id}")
            conn.execute(
                batches.update()
                .where(batches.c.id == local_id)
                .values(
                    provider_batch_id=batch.provider_batch_id,
                    state=BatchState.SUBMITTED.value,
                    submitted_at=_now(),
                    expires_at=batch.expires_at,
                    counts=batch.counts.model_dump(),
                )
            )
            conn.execute(requests.update().where(requests.c.batch_id == local_id).values(state="submitted"))
            self._event(
                conn, row["job_id"], "batch.submitted", batch=local_id, provider_batch_id=batch.provider_batch_id
            )
        if batch.state != BatchState.SUBMITTED:
            self.update_batch(local_id, batch)

    def update_batch(self, local_id: int, batch: Batch) -> None:
        with self.engine.begin() as conn:
            row = self._batch_row(conn, local_id)
            old = BatchState(row["state"])
            check_transition(BATCH_TRANSITIONS, old, batch.state, f"batch {local_id}")
            conn.execute(
                batches.update()
                .where(batches.c.id == local_id)
                .values(
                    state=batch.state.value,
                    counts=batch.counts.model_dump(),
                    ended_at=batch.ended_at
                    or (_now() if batch.state.terminal and not row["ended_at"] else None)
                    or row["ended_at"],
                )
            )
            if old != batch.state:
                self._event(conn, row["job_id"], "batch.state", batch=local_id, old=old.value, new=batch.state.value)

    def mark_ingested(self, local_id: int) -> None:
        with self.engine.begin() as conn:
            row = self._batch_row(conn, local_id)
            conn.execute(batches.update().where(batches.c.id == local_id).values(ingested_at=_now()))
            self._event(conn, row["job_id"], "batch.ingested", batch=local_id)

    def fail_unsubmitted_batch(self, local_id: int, reason: str) -> None:
        """A batch the provider refused: release its requests so they can be packed again or failed."""
        with self.engine.begin() as conn:
            row = self._batch_row(conn, local_id)
            check_transition(BATCH_TRANSITIONS, BatchState(row["state"]), BatchState.FAILED, f"batch {local_id}")
            conn.execute(batches.update().where(batches.c.id == local_id).values(state="failed", ended_at=_now()))
            self._event(conn, row["job_id"], "batch.failed", batch=local_id, reason=reason)

    def _batch_row(self, conn: sa.Connection, local_id: int) -> dict[str, Any]:
        row = conn.execute(batches.select().where(batches.c.id == local_id)).mappings().first()
        if row is None:
            raise FreightError(f"no batch {local_id} in this store")
        return dict(row)

    def batches(self, job_id: str, states: Iterable[BatchState] | None = None) -> list[dict[str, Any]]:
        q = batches.select().where(batches.c.job_id == job_id)
        if states is not None:
            q = q.where(batches.c.state.in_([s.value for s in states]))
        with self._read() as conn:
            rows = conn.execute(q.order_by(batches.c.id)).mappings().all()
        return [
            {**r, **{k: _aware(r[k]) for k in ("created_at", "submitted_at", "expires_at", "ended_at")}} for r in rows
        ]

    def batch_custom_ids(self, local_id: int) -> list[str]:
        with self._read() as conn:
            return list(
                conn.execute(
                    sa.select(requests.c.custom_id)
                    .where(requests.c.batch_id == local_id)
                    .order_by(requests.c.custom_id)
                ).scalars()
            )

    # --- outcomes ---------------------------------------------------------------------------------------------

    def record_outcome(
        self, job_id: str, custom_id: str, outcome: Outcome, *, cost_usd: float = 0.0, sync_cost_usd: float = 0.0
    ) -> None:
        """Commit one request's outcome. Raises UnknownRequest / DuplicateOutcome rather than taking it silently."""
        usage = outcome.usage if isinstance(outcome, Succeeded | Errored) else None
        with self.engine.begin() as conn:
            req = conn.execute(
                sa.select(requests.c.state).where(requests.c.job_id == job_id, requests.c.custom_id == custom_id)
            ).first()
            if req is None:
                raise UnknownRequest(f"job {job_id}: a result arrived for custom_id {custom_id!r}, which it never sent")
            if req.state == "done":
                raise DuplicateOutcome(f"job {job_id}: custom_id {custom_id!r} already has an outcome")
            conn.execute(
                outcomes.insert().values(
                    job_id=job_id,
                    custom_id=custom_id,
                    status=outcome.status,
                    kind=outcome.kind.value if isinstance(outcome, Errored) else None,
                    payload=outcome.model_dump(mode="json"),
                    input_tokens=usage.input_tokens if usage else 0,
                    output_tokens=usage.output_tokens if usage else 0,
                    cache_write_tokens=usage.cache_write_tokens if usage else 0,
                    cache_read_tokens=usage.cache_read_tokens if usage else 0,
                    cost_usd=cost_usd,
                    sync_cost_usd=sync_cost_usd,
                    recorded_at=_now(),
                )
            )
            conn.execute(
                requests.update()
                .where(requests.c.job_id == job_id, requests.c.custom_id == custom_id)
                .values(state="done")
            )

    def get_outcome(self, job_id: str, custom_id: str) -> Outcome | None:
        with self._read() as conn:
            payload = conn.execute(
                sa.select(outcomes.c.payload).where(outcomes.c.job_id == job_id, outcomes.c.custom_id == custom_id)
            ).scalar()
        return _OUTCOME.validate_python(payload) if payload is not None else None

    def totals(self, job_id: str) -> dict[str, float]:
        """Tokens and cost of everything this job has been billed for, summed by the database."""
        cols = [
            outcomes.c.input_tokens,
            outcomes.c.output_tokens,
            outcomes.c.cache_write_tokens,
            outcomes.c.cache_read_tokens,
            outcomes.c.cost_usd,
            outcomes.c.sync_cost_usd,
        ]
        with self._read() as conn:
            row = (
                conn.execute(
                    sa.select(*[sa.func.coalesce(sa.func.sum(c), 0).label(c.name) for c in cols]).where(
                        outcomes.c.job_id == job_id
                    )
                )
                .mappings()
                .one()
            )
        return {k: float(v) for k, v in row.items()}

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


def _request_row(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["request"] = Request.model_validate(d.pop("payload"))
    return d
