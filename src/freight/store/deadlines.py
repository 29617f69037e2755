"""What deadlines need of the store: moving a hedged job's unsent requests to the synchronous path, and reading which
way each document went (batch or sync, and what it cost), for the hedge report."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from freight.store.schema import outcomes, requests
from freight.store.store import StoreBase


class DeadlineStore(StoreBase):
    def requests_to_sync(self, job_id: str, reason: str) -> int:
        """Every request of the job not sent yet (created, batch mode) goes through the synchronous API instead.
        Requests already in a batch are not touched: the hedge cancels their batch first, and what the cancel
        returns unanswered comes back here as a retry."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                requests.update()
                .where(requests.c.job_id == job_id, requests.c.state == "created", requests.c.mode == "batch")
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
