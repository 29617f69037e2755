"""A job's batches in the store: recorded (`preparing`) before they are submitted, then whatever the provider reports.

A batch row is written before the provider hears of it, so a run killed in between finds it again and looks for it at
the provider (adoption) instead of submitting twice. What the provider says about its own batch is recorded as said:
an unexpected sequence of states is flagged, never refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from freight.domain import BATCH_TRANSITIONS, Batch, BatchState, FreightError, RequestCounts, check_transition
from freight.store.schema import batches, requests
from freight.store.store import StoreBase, _aware, _now

_CHUNK = 500


class BatchStore(StoreBase):
    """Batches of a job; `freight.store.results.Store` brings it together with requests, outcomes and leases."""

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

    def update_batch(self, local_id: int, batch: Batch) -> bool:
        """Record what the provider says about its batch. The provider is the truth about its own states: a sequence
        our table does not expect (OpenAI's `finalizing -> cancelled`, a batch first seen `ended`) is recorded all
        the same, with an event; returns False then, so the caller can say so."""
        with self.engine.begin() as conn:
            row = self._batch_row(conn, local_id)
            old = BatchState(row["state"])
            if row["provider_batch_id"] is None:  # never submitted: its state is ours, and ours must follow the table
                check_transition(BATCH_TRANSITIONS, old, batch.state, f"batch {local_id}")
            expected = old == batch.state or batch.state in BATCH_TRANSITIONS[old]
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
                self._event(
                    conn,
                    row["job_id"],
                    "batch.state",
                    batch=local_id,
                    old=old.value,
                    new=batch.state.value,
                    **({} if expected else {"unexpected": True}),
                )
        return expected

    def mark_ingested(self, local_id: int) -> None:
        with self.engine.begin() as conn:
            row = self._batch_row(conn, local_id)
            # Who ingested it: the worker slot whose step claim it is (store/step_claims.py); None for `freight run`.
            conn.execute(
                batches.update()
                .where(batches.c.id == local_id)
                .values(ingested_at=_now(), ingested_by=row["claimed_by"])
            )
            self._event(conn, row["job_id"], "batch.ingested", batch=local_id, by=row["claimed_by"])

    def fail_unsubmitted_batch(self, local_id: int, reason: str) -> int:
        """A batch the provider refused, or one never sent: release its requests so they are packed again (or failed
        by the caller). Returns how many were released; none is left holding the id of a batch that never ran."""
        with self.engine.begin() as conn:
            row = self._batch_row(conn, local_id)
            check_transition(BATCH_TRANSITIONS, BatchState(row["state"]), BatchState.FAILED, f"batch {local_id}")
            conn.execute(batches.update().where(batches.c.id == local_id).values(state="failed", ended_at=_now()))
            released = conn.execute(
                requests.update()
                .where(requests.c.batch_id == local_id, requests.c.state == "created")
                .values(batch_id=None)
            ).rowcount
            self._event(conn, row["job_id"], "batch.failed", batch=local_id, reason=reason, released=released)
        return int(released)

    def route_to_sync(self, job_id: str, custom_id: str, reason: str) -> None:
        """A request of a batch job that no batch can carry (tools): it goes through the synchronous API instead."""
        with self.engine.begin() as conn:
            conn.execute(
                requests.update()
                .where(requests.c.job_id == job_id, requests.c.custom_id == custom_id, requests.c.state == "created")
                .values(mode="sync", batch_id=None)
            )
            self._event(conn, job_id, "request.routed", custom_id=custom_id, mode="sync", reason=reason)

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

    def knows_batch(self, provider_batch_id: str) -> bool:
        with self._read() as conn:
            return (
                conn.execute(sa.select(batches.c.id).where(batches.c.provider_batch_id == provider_batch_id)).first()
                is not None
            )

    def batch_custom_ids(self, local_id: int) -> list[str]:
        with self._read() as conn:
            return list(
                conn.execute(
                    sa.select(requests.c.custom_id)
                    .where(requests.c.batch_id == local_id)
                    .order_by(requests.c.custom_id)
                ).scalars()
            )
