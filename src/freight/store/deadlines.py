"""What deadlines need of the store: moving a hedged job's unsent requests to the synchronous path, reading which way
each document went (batch or sync, and what it cost) for the hedge report, and `freight schedule`'s state - each
file seen, and the one submission (job) that took it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from freight.domain import FreightError
from freight.store.schema import outcomes, requests, schedule_files, schedule_submissions
from freight.store.store import StoreBase


class DeadlineStore(StoreBase):
    def requests_to_sync(self, job_id: str, reason: str) -> int:
        """Every request of the job not sent yet (created, batch mode) goes through the synchronous API instead.
        Requests already in a batch are not touched: the hedge cancels their batch first, and what the cancel
        returns unanswered comes back here as a retry."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                requests.update()
                .where(
                    requests.c.job_id == job_id,
                    requests.c.state == "created",
                    requests.c.mode == "batch",
                    # One in a batch still `preparing` may have reached the provider (a submission never
                    # acknowledged): the runner finds that batch again first, and the hedge cancels it.
                    requests.c.batch_id.is_(None),
                )
                .values(mode="sync", batch_id=None)
            ).rowcount
            if moved:
                self._event(conn, job_id, "hedge.routed", moved=moved, reason=reason)
        return int(moved)

    def request_paths(self, job_id: str) -> list[dict[str, Any]]:
        """Each request of the job that has an outcome: its item, custom_id, path (batch | sync), local batch id,
        outcome status and costs, in the order they were recorded."""
        q = (
            sa.select(
                requests.c.item_id,
                requests.c.custom_id,
                requests.c.mode,
                requests.c.batch_id,
                outcomes.c.status,
                outcomes.c.cost_usd,
                outcomes.c.sync_cost_usd,
                outcomes.c.recorded_at,
            )
            .join(
                outcomes, sa.and_(outcomes.c.job_id == requests.c.job_id, outcomes.c.custom_id == requests.c.custom_id)
            )
            .where(requests.c.job_id == job_id)
            .order_by(outcomes.c.recorded_at, requests.c.custom_id)
        )
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    # --- freight schedule ---------------------------------------------------------------------------------------

    def schedule_seen(self, workflow: str, files: list[tuple[str, float]], now: float) -> int:
        """Record files of a workflow's input as seen (path, arrival time); those known already are left as they
        are. Returns how many were new."""
        if not files:
            return 0
        with self.engine.begin() as conn:
            known = set(
                conn.execute(sa.select(schedule_files.c.path).where(schedule_files.c.workflow == workflow)).scalars()
            )
            new = [
                {"workflow": workflow, "path": path, "arrived_at": at, "seen_at": now, "submission": None}
                for path, at in files
                if path not in known
            ]
            if new:
                conn.execute(schedule_files.insert(), new)
        return len(new)

    def schedule_waiting(self, workflow: str) -> list[dict[str, Any]]:
        """The workflow's files seen and not taken yet, oldest arrival first."""
        q = (
            sa.select(schedule_files)
            .where(schedule_files.c.workflow == workflow, schedule_files.c.submission.is_(None))
            .order_by(schedule_files.c.arrived_at, schedule_files.c.path)
        )
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def schedule_take(
        self, workflow: str, paths: list[str], job_id: str, config: dict[str, Any], deadline: float, now: float
    ) -> int:
        """Record a submission and mark its files taken by it, in one transaction. A file another submission took
        meanwhile (a second scheduler) rolls the whole of it back: each file goes to exactly one job."""
        with self.engine.begin() as conn:
            sub = conn.execute(
                schedule_submissions.insert().values(
                    workflow=workflow, job_id=job_id, config=config, deadline=deadline, created_at=now
                )
            ).inserted_primary_key
            assert sub is not None
            taken = conn.execute(
                schedule_files.update()
                .where(
                    schedule_files.c.workflow == workflow,
                    schedule_files.c.path.in_(paths),
                    schedule_files.c.submission.is_(None),
                )
                .values(submission=sub[0])
            ).rowcount
            if taken != len(paths):
                raise FreightError(f"workflow {workflow}: {len(paths) - taken} file(s) were taken by another scheduler")
            self._event(conn, job_id, "schedule.taken", workflow=workflow, files=len(paths), deadline=deadline)
        return int(sub[0])

    def schedule_open(self) -> list[dict[str, Any]]:
        """Submissions whose job has not been seen to its end, oldest first."""
        q = sa.select(schedule_submissions).where(schedule_submissions.c.done_at.is_(None))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q.order_by(schedule_submissions.c.id)).mappings()]

    def schedule_done(self, submission: int, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                schedule_submissions.update().where(schedule_submissions.c.id == submission).values(done_at=now)
            )

    def schedule_files_of(self, workflow: str) -> list[dict[str, Any]]:
        """Every file of a workflow with the job that took it (None: waiting), for status and tests."""
        q = (
            sa.select(schedule_files, schedule_submissions.c.job_id)
            .join(schedule_submissions, schedule_submissions.c.id == schedule_files.c.submission, isouter=True)
            .where(schedule_files.c.workflow == workflow)
            .order_by(schedule_files.c.path)
        )
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]
