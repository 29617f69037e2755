"""Many workers, one PostgreSQL store: the job queue, the live workers, and how a worker claims a job.

The unit of claim is a job: `freight submit` puts a job in `job_queue`, and a worker claims it by taking the job's
lease (`store/lease.py`) with a short ttl and its own heartbeat. So one job is advanced by one worker at a time, and
many jobs share the pool; every invariant of the runner's loop (a batch recorded `preparing` before it is sent, one
outcome per request by primary key) holds unchanged, because the loop still has the job to itself.

Claiming is `SELECT ... FOR UPDATE OF job_queue SKIP LOCKED`: workers looking for work at the same moment each lock
other candidate rows instead of queueing behind one another, and the lease row decides who wins, as it does for
`freight run`. A worker that dies (kill -9, a lost machine) keeps its claims only until their heartbeat expires (at
once when it was a process on this host that no longer exists); then the next worker takes the job over and the
loop's own resume logic carries on: submitted batches are polled, never sent again.

A worker's claims are the leases whose owner starts with its id (`<worker_id>/<slot>`), which is how `freight
workers` and `freight status` say who holds what.

Step claims, one batch step at a time, are in `store/step_claims.py`.
"""

from __future__ import annotations

import os
import socket
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from freight.domain import BatchState, JobState
from freight.store.lease import LeaseStore
from freight.store.schema import batches, job_queue, jobs, leases, workers
from freight.store.step_claims import StepClaimStore, worker_of
from freight.store.store import _aware, _now

# What a worker may pick up: a job not started yet, or one whose runner stopped without ending it (a worker killed or
# told to stop). A `stopped` job waits for a person (`freight resume`): its cause must be fixed first.
CLAIMABLE = (JobState.CREATED.value, JobState.RUNNING.value)
_CANDIDATES = 16  # queue rows tried per claim: enough to step over jobs held by live processes on this host


@dataclass(frozen=True)
class WorkerRow:
    """A worker as recorded, with the jobs it holds."""

    worker_id: str
    host: str
    pid: int
    concurrency: int
    state: str
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    claims: list[str]
    batches: list[str] = field(default_factory=list)  # step claims: "<job_id> batch <id>", polled or ingested now

    @property
    def alive(self) -> bool:
        return self.expires_at > _now()


def claim_owner(worker_id: str, slot: int) -> str:
    return f"{worker_id}/{slot}"


class ClaimStore(StepClaimStore, LeaseStore):
    """The queue and the workers' table. Claiming needs PostgreSQL (`SKIP LOCKED`); the rest works on both."""

    # --- the queue ------------------------------------------------------------------------------------------------

    def enqueue_job(self, job_id: str, priority: int = 0) -> None:
        """Put a job in the queue for workers (again: its priority is updated)."""
        values = {"job_id": job_id, "priority": priority, "submitted_at": _now()}
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                stmt = postgresql.insert(job_queue).values(**values)
                conn.execute(stmt.on_conflict_do_update(index_elements=["job_id"], set_={"priority": priority}))
            else:
                from sqlalchemy.dialects import sqlite

                stmt_l = sqlite.insert(job_queue).values(**values)
                conn.execute(stmt_l.on_conflict_do_update(index_elements=["job_id"], set_={"priority": priority}))
            self._event(conn, job_id, "job.queued", priority=priority)

    def queued_jobs(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        """Queued jobs, highest priority first: job_id, priority, state."""
        q = (
            sa.select(job_queue.c.job_id, job_queue.c.priority, jobs.c.state)
            .join(jobs, jobs.c.job_id == job_queue.c.job_id)
            .order_by(job_queue.c.priority.desc(), job_queue.c.submitted_at)
        )
        if open_only:
            q = q.where(jobs.c.state.in_(CLAIMABLE))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def claim_job(self, owner: str, ttl: float, skip: frozenset[str] = frozenset()) -> str | None:
        """Take the lease of the first claimable queued job (priority, then age) no live runner holds, for `owner`.
        Returns its id, or None when there is nothing to take. PostgreSQL only."""
        passed = set(skip)  # held by a live process after all, or not ours to run
        for _ in range(_CANDIDATES):
            found = self._claim_one(owner, ttl, passed)
            if found is None:
                return None
            job_id, taken = found
            if taken:
                return job_id
            passed.add(job_id)
        return None

    def _claim_one(self, owner: str, ttl: float, passed: set[str]) -> tuple[str, bool] | None:
        """Lock one candidate queue row (SKIP LOCKED: a row another claimer is looking at is stepped over, so
        claimers never queue behind each other) and try to take its lease while the row is locked."""
        now = _now()
        live_elsewhere = (
            sa.select(leases.c.job_id)
            .where(
                leases.c.job_id == job_queue.c.job_id,
                leases.c.owner != owner,
                leases.c.expires_at > now,
                # A holder on this host is judged by its pid too (in Python, below): it may be dead before expiry.
                leases.c.host != socket.gethostname(),
            )
            .exists()
        )
        with self.engine.begin() as conn:
            if conn.dialect.name != "postgresql":
                raise RuntimeError("claiming work needs PostgreSQL (SKIP LOCKED)")
            q = (
                sa.select(job_queue.c.job_id)
                .join(jobs, jobs.c.job_id == job_queue.c.job_id)
                .where(jobs.c.state.in_(CLAIMABLE), ~live_elsewhere)
                .order_by(job_queue.c.priority.desc(), job_queue.c.submitted_at)
                .limit(1)
                .with_for_update(of=job_queue, skip_locked=True)
            )
            if passed:
                q = q.where(job_queue.c.job_id.not_in(sorted(passed)))
            job_id = conn.execute(q).scalar()
            if job_id is None:
                return None
            # The lease row decides, in its own transaction with the row locked (a holder on this host whose pid is
            # gone is taken over at once): the queue row's lock only keeps claimers off each other's candidates.
            taken, _ = self.acquire_lease(str(job_id), owner, ttl)
            return str(job_id), taken

    # --- workers ----------------------------------------------------------------------------------------------

    def register_worker(self, worker_id: str, concurrency: int, ttl: float) -> None:
        now = _now()
        with self.engine.begin() as conn:
            # Workers killed outright never retire: their rows go once they have been dead a day.
            conn.execute(workers.delete().where(workers.c.expires_at < now - timedelta(days=1)))
            conn.execute(
                workers.insert().values(
                    worker_id=worker_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    concurrency=concurrency,
                    state="working",
                    started_at=now,
                    heartbeat_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
            self._event(conn, None, "worker.started", worker=worker_id, host=socket.gethostname(), pid=os.getpid())

    def heartbeat_worker(self, worker_id: str, ttl: float, state: str | None = None) -> None:
        """Renew the worker's row and every step claim its slots hold, in one transaction."""
        now = _now()
        values: dict[str, Any] = {"heartbeat_at": now, "expires_at": now + timedelta(seconds=ttl)}
        if state is not None:
            values["state"] = state
        with self.engine.begin() as conn:
            conn.execute(workers.update().where(workers.c.worker_id == worker_id).values(**values))
            conn.execute(
                batches.update()
                .where(batches.c.claimed_by.like(f"{worker_id}/%"))
                .values(claim_expires_at=now + timedelta(seconds=ttl))
            )

    def retire_worker(self, worker_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(workers.delete().where(workers.c.worker_id == worker_id))
            conn.execute(
                batches.update()
                .where(batches.c.claimed_by.like(f"{worker_id}/%"))
                .values(claimed_by=None, claim_expires_at=None)
            )
            self._event(conn, None, "worker.stopped", worker=worker_id)

    def list_workers(self, *, include_dead: bool = False) -> list[WorkerRow]:
        """Workers with a live heartbeat (and, with `include_dead`, those that died without retiring), each with the
        jobs it holds now."""
        now = _now()
        with self._read() as conn:
            rows = conn.execute(sa.select(workers).order_by(workers.c.started_at)).mappings().all()
            held = conn.execute(
                sa.select(leases.c.job_id, leases.c.owner).where(leases.c.expires_at > now).order_by(leases.c.job_id)
            ).all()
        steps = self.batch_claims()
        claims: dict[str, list[str]] = {}
        for job_id, owner in held:
            wid = worker_of(owner)
            if wid is not None:
                claims.setdefault(wid, []).append(job_id)
        found = [
            WorkerRow(
                worker_id=r["worker_id"],
                host=r["host"],
                pid=r["pid"],
                concurrency=r["concurrency"],
                state=r["state"],
                started_at=_aware(r["started_at"]) or now,
                heartbeat_at=_aware(r["heartbeat_at"]) or now,
                expires_at=_aware(r["expires_at"]) or now,
                claims=claims.get(r["worker_id"], []),
                batches=[f"{job} batch {b}" for job, b in steps.get(r["worker_id"], [])],
            )
            for r in rows
        ]
        return [w for w in found if include_dead or w.alive]

    def job_holder(self, job_id: str) -> dict[str, Any] | None:
        """Who holds a job now (its live lease): the worker id (None for `freight run`), pid, host, last heartbeat.
        The holder of a job holds every one of its batches."""
        holder = self.lease_holder(job_id)
        if holder is None or holder.expires_at <= _now():
            return None
        return {
            "worker": worker_of(holder.owner),
            "pid": holder.pid,
            "host": holder.host,
            "heartbeat_at": holder.heartbeat_at,
        }

    # --- shared limits ------------------------------------------------------------------------------------------

    def active_batches(self, provider: str) -> int:
        """Batches of `provider` open at it right now, across every job and worker of this store."""
        open_states = [
            s.value for s in (BatchState.PREPARING, BatchState.SUBMITTED, BatchState.IN_PROGRESS, BatchState.FINALIZING)
        ]
        with self._read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(batches)
                    .where(batches.c.provider == provider, batches.c.state.in_(open_states))
                ).scalar_one()
            )

    def create_batch_within(self, job_id: str, provider: str, custom_ids: list[str], limit: int) -> int | None:
        """`create_batch`, unless `provider` already has `limit` open batches in this store (then None). On
        PostgreSQL the count and the insert are serialized per provider by an advisory lock, so workers racing for
        the last slot cannot both take it."""
        with self.engine.connect() as conn:
            locked = conn.dialect.name == "postgresql"
            key = zlib.crc32(f"freight-batches:{provider}".encode())
            if locked:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
            try:
                if self.active_batches(provider) >= limit:
                    return None
                return self.create_batch(job_id, provider, custom_ids)
            finally:
                if locked:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
