"""Step claims: the job's lease still makes one worker its holder, the only one that creates, packs and submits its
requests. The heavy steps of a batch - polling it, and ingesting an ended batch's results (record + settle) - are
claimed per batch, on the batch's row (`claimed_by`, `claim_expires_at`): the holder claims each batch before it
polls or ingests it, and a worker with a free slot and no job to take claims a batch of a job another worker holds
(`next_batch_step`, `SELECT ... FOR UPDATE SKIP LOCKED`). So one job is advanced by every worker at once, and no batch
is polled or ingested by two at a time. A claim outlives its holder's last heartbeat by the worker's ttl (the worker's
heartbeat renews all its slots' claims); a claim left by a dead worker expires and the next claimer takes it over,
with an event. A batch's outcomes are one primary-key row per custom_id: a takeover re-reading results the dead
worker had recorded takes nothing twice, and the outcomes it recorded without settling are settled by the holder once
the batch is free (`unsettled_free`). Only jobs held by a worker are helped: `freight run` claims no batch steps.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from freight.domain import BatchState
from freight.store.batches import BatchStore
from freight.store.schema import batches, events, leases, requests
from freight.store.store import _aware, _now


def worker_of(owner: str) -> str | None:
    """The worker id of a lease owner, or None for a lease of `freight run` (a bare random token)."""
    return owner.split("/", 1)[0] if "/" in owner else None


class StepClaimStore(BatchStore):
    """Claims on a batch's steps (poll, ingest), on the batch's row. Claiming needs PostgreSQL (`SKIP LOCKED`)."""

    def claim_batch(self, batch_id: int, owner: str, ttl: float, step: str) -> dict[str, Any] | None:
        """Claim one batch for `owner` to `step` it ("poll" or "ingest"): free, expired, or `owner`'s already.
        Returns the batch's row as it is now, or None when another live claim (or a claimer looking at the row this
        instant, SKIP LOCKED) has it. An ingest claim, and any taken over from a dead claimer, is logged."""
        now = _now()
        with self.engine.begin() as conn:
            q = batches.select().where(batches.c.id == batch_id)
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            row = conn.execute(q).mappings().first()
            if row is None or (step == "ingest" and row["ingested_at"] is not None):
                return None  # locked by a claimer this instant, or ingested since the caller looked
            was, until = row["claimed_by"], _aware(row["claim_expires_at"])
            if was is not None and was != owner and until is not None and until > now:
                return None
            values: dict[str, Any] = {"claimed_by": owner, "claim_expires_at": now + timedelta(seconds=ttl)}
            if step == "poll":
                values["polled_at"] = now
            conn.execute(batches.update().where(batches.c.id == batch_id).values(**values))
            taken_over = was is not None and was != owner
            if step == "ingest" or taken_over:
                extra = {"taken_over_from": was} if taken_over else {}
                self._event(conn, row["job_id"], "batch.claimed", batch=batch_id, step=step, by=owner, **extra)
        return {**row, **values}

    def release_batch(self, batch_id: int, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                batches.update()
                .where(batches.c.id == batch_id, batches.c.claimed_by == owner)
                .values(claimed_by=None, claim_expires_at=None)
            )

    def next_batch_step(self, owner: str, ttl: float, poll_every: float) -> tuple[str, dict[str, Any]] | None:
        """For a slot with no job of its own: the next batch step of a job a worker holds, claimed for `owner`.
        An ended batch not yet ingested comes first (its results wait), then an open batch nobody polled for
        `poll_every` seconds (its holder is busy). Returns ("ingest" | "poll", the batch's row), or None."""
        now = _now()
        ended = [s.value for s in BatchState if s.terminal]
        open_ = [
            s.value for s in (BatchState.SUBMITTED, BatchState.IN_PROGRESS, BatchState.FINALIZING, BatchState.CANCELING)
        ]
        held_by_a_worker = (
            sa.select(leases.c.job_id)
            .where(leases.c.job_id == batches.c.job_id, leases.c.expires_at > now, leases.c.owner.like("%/%"))
            .exists()
        )
        stale = sa.or_(batches.c.polled_at.is_(None), batches.c.polled_at < now - timedelta(seconds=poll_every))
        with self.engine.begin() as conn:
            if conn.dialect.name != "postgresql":
                raise RuntimeError("claiming work needs PostgreSQL (SKIP LOCKED)")
            row = (
                conn.execute(
                    batches.select()
                    .where(
                        batches.c.provider_batch_id.is_not(None),
                        batches.c.ingested_at.is_(None),
                        sa.or_(batches.c.claimed_by.is_(None), batches.c.claim_expires_at < now),
                        sa.or_(batches.c.state.in_(ended), sa.and_(batches.c.state.in_(open_), stale)),
                        held_by_a_worker,
                    )
                    .order_by(sa.case((batches.c.state.in_(ended), 0), else_=1), batches.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            step = "ingest" if row["state"] in ended else "poll"
            values: dict[str, Any] = {"claimed_by": owner, "claim_expires_at": now + timedelta(seconds=ttl)}
            if step == "poll":
                values["polled_at"] = now
            conn.execute(batches.update().where(batches.c.id == row["id"]).values(**values))
            was = row["claimed_by"]
            if step == "ingest" or was is not None:
                extra = {"taken_over_from": was} if was is not None else {}
                self._event(conn, row["job_id"], "batch.claimed", batch=row["id"], step=step, by=owner, **extra)
        return step, {**row, **values}

    def unsettled_free(self, job_id: str, owner: str) -> list[str]:
        """`unsettled`, less the outcomes of batches another slot has a live claim on: that claimer recorded them
        and settles them itself (or, dead, its claim expires and they come back here)."""
        now = _now()
        busy = sa.select(batches.c.id).where(
            batches.c.job_id == job_id,
            batches.c.claimed_by.is_not(None),
            batches.c.claimed_by != owner,
            batches.c.claim_expires_at > now,
        )
        with self._read() as conn:
            return list(
                conn.execute(
                    sa.select(requests.c.custom_id)
                    .where(
                        requests.c.job_id == job_id,
                        requests.c.state == "done",
                        sa.or_(requests.c.batch_id.is_(None), requests.c.batch_id.not_in(busy)),
                    )
                    .order_by(requests.c.custom_id)
                ).scalars()
            )

    def batches_to_ingest(self, job_id: str) -> int:
        """Ended batches of the job whose results are not all taken in yet (by anyone)."""
        ended = [s.value for s in BatchState if s.terminal]
        with self._read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(batches)
                    .where(
                        batches.c.job_id == job_id,
                        batches.c.state.in_(ended),
                        batches.c.provider_batch_id.is_not(None),
                        batches.c.ingested_at.is_(None),
                    )
                ).scalar_one()
            )

    def last_event_id(self, job_id: str) -> int:
        """The newest event of a job: a holder waiting between polls looks here to see whether another worker has
        moved the job meanwhile (an index-only read)."""
        with self._read() as conn:
            found = conn.execute(sa.select(sa.func.max(events.c.id)).where(events.c.job_id == job_id)).scalar()
        return int(found or 0)

    def batch_claims(self) -> dict[str, list[tuple[str, int]]]:
        """Live step claims by worker id: (job_id, batch id) each."""
        now = _now()
        with self._read() as conn:
            rows = conn.execute(
                sa.select(batches.c.claimed_by, batches.c.job_id, batches.c.id)
                .where(batches.c.claimed_by.is_not(None), batches.c.claim_expires_at > now)
                .order_by(batches.c.id)
            ).all()
        found: dict[str, list[tuple[str, int]]] = {}
        for owner, job_id, batch_id in rows:
            wid = worker_of(owner)
            if wid is not None:
                found.setdefault(wid, []).append((job_id, int(batch_id)))
        return found
