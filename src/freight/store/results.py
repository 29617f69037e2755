"""Outcomes in the store: recorded exactly once, and the sums and joins that reports are read from."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter

from freight.domain import Errored, Outcome, Succeeded
from freight.store.lease import LeaseStore
from freight.store.schema import outcomes, requests
from freight.store.store import DuplicateOutcome, UnknownRequest, _now
from freight.store.work import WorkStore, _request_row

_OUTCOME = TypeAdapter[Outcome](Outcome)


class Store(WorkStore, LeaseStore):
    def group_outcomes(self, job_id: str, group: str) -> list[tuple[int, str, Outcome]]:
        """(part, custom_id, outcome) of every answered request of one split document, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(requests.c.part, requests.c.custom_id, outcomes.c.payload)
                .join(
                    outcomes,
                    sa.and_(outcomes.c.job_id == requests.c.job_id, outcomes.c.custom_id == requests.c.custom_id),
                )
                .where(requests.c.job_id == job_id, requests.c.chunk_group == group)
                .order_by(requests.c.created_at, requests.c.custom_id)
            ).all()
        return [(int(part), cid, _OUTCOME.validate_python(payload)) for part, cid, payload in rows]

    def item_requests(self, job_id: str, item_id: str) -> list[dict[str, Any]]:
        """An item's requests in the order they were made, each with its outcome row (or None)."""
        with self._read() as conn:
            rows = (
                conn.execute(
                    sa.select(
                        requests,
                        outcomes.c.status.label("outcome_status"),
                        outcomes.c.kind.label("outcome_kind"),
                        outcomes.c.input_tokens,
                        outcomes.c.output_tokens,
                        outcomes.c.cache_write_tokens,
                        outcomes.c.cache_read_tokens,
                        outcomes.c.cost_usd,
                        outcomes.c.sync_cost_usd,
                    )
                    .outerjoin(
                        outcomes,
                        sa.and_(outcomes.c.job_id == requests.c.job_id, outcomes.c.custom_id == requests.c.custom_id),
                    )
                    .where(requests.c.job_id == job_id, requests.c.item_id == item_id)
                    .order_by(requests.c.created_at, requests.c.custom_id)
                )
                .mappings()
                .all()
            )
        return [_request_row(r) for r in rows]

    def fix_counts(self, job_id: str) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(requests.c.fix, sa.func.count())
                .where(requests.c.job_id == job_id, requests.c.fix.is_not(None))
                .group_by(requests.c.fix)
            ).all()
        return {fix: n for fix, n in rows}

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
            if req.state in ("done", "settled"):
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
