"""Recording outcomes: a page of them in one transaction, each custom_id's outcome exactly once, and (with a
`Decide`) the page's common case settled in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa

from freight.domain import Errored, ItemState, Outcome, Request, Succeeded
from freight.store.schema import items, outcomes, requests
from freight.store.store import DuplicateOutcome, UnknownRequest, _now
from freight.store.work import _CHUNK, Settlement, WorkStore


@dataclass(frozen=True, slots=True)
class PageRow:
    """A request being recorded, as `record_outcomes`'s `decide` sees it."""

    custom_id: str
    state: str
    item_id: str
    part: int | None
    mode: str
    item_state: ItemState | None  # None: no item row (a ready-made line whose item is gone)
    request: Request | None  # read only when `decide.bodies`


class Recorded(NamedTuple):
    taken: list[str]  # recorded now
    refused: list[tuple[str, str]]  # (custom_id, "unknown" | "duplicate")
    settled: list[str]  # of those taken, the ones `decide` settled in the same transaction


class Decide(Protocol):
    """Settle what can be settled from the page in hand (see `Store.record_outcomes`)."""

    bodies: bool  # whether the decision needs each request's body

    def __call__(self, rows: Sequence[PageRow], outcomes: Mapping[str, Outcome]) -> list[Settlement]: ...


class RecordStore(WorkStore):
    def record_outcome(
        self, job_id: str, custom_id: str, outcome: Outcome, *, cost_usd: float = 0.0, sync_cost_usd: float = 0.0
    ) -> None:
        """Commit one request's outcome. Raises UnknownRequest / DuplicateOutcome rather than taking it silently."""
        with self.engine.begin() as conn:
            req = conn.execute(
                sa.select(requests.c.state).where(requests.c.job_id == job_id, requests.c.custom_id == custom_id)
            ).first()
            if req is None:
                raise UnknownRequest(f"job {job_id}: a result arrived for custom_id {custom_id!r}, which it never sent")
            if req.state in ("done", "settled"):
                raise DuplicateOutcome(f"job {job_id}: custom_id {custom_id!r} already has an outcome")
            conn.execute(
                outcomes.insert().values(**_outcome_row(job_id, custom_id, outcome, cost_usd, sync_cost_usd, _now()))
            )
            conn.execute(
                requests.update()
                .where(requests.c.job_id == job_id, requests.c.custom_id == custom_id)
                .values(state="done")
            )

    def record_outcomes(
        self,
        job_id: str,
        entries: Sequence[tuple[str, Outcome, float, float]],
        decide: Decide | None = None,
    ) -> Recorded:
        """Commit a page of outcomes, (custom_id, outcome, cost, sync cost) each, in one transaction: one query for
        the requests' states, one executemany of outcomes, one update per state. An unknown custom_id, one answered
        already, or one repeated within the page is not taken: it comes back in the second list, (custom_id,
        "unknown" | "duplicate"), with the rest of the page recorded. The primary key of `outcomes` still enforces
        "exactly one outcome": should a row slip past the check (another writer), the page is taken one row at a time
        instead (and nothing of it is settled here).

        `decide`, when given, is shown the taken requests (`PageRow`s, with their item's state) and returns the
        settlements it can make from what is in hand; those requests are settled in the same transaction as their
        outcomes are recorded (settled, their items moved), the others are left `done` for the caller to settle.
        One transaction for both is as durable as two: nothing is acted on that is not recorded with it.
        Returns the custom_ids recorded, the ones refused, and those of the recorded that were settled."""
        ids = list(dict.fromkeys(cid for cid, *_ in entries))
        try:
            with self.engine.begin() as conn:
                found: dict[str, PageRow] = {}
                for start in range(0, len(ids), _CHUNK):
                    found.update(self._page_rows(conn, job_id, ids[start : start + _CHUNK], decide))
                taken: list[str] = []
                refused: list[tuple[str, str]] = []
                rows: list[dict[str, Any]] = []
                now = _now()
                answered: dict[str, Outcome] = {}
                for cid, outcome, cost, sync_cost in entries:
                    row = found.get(cid)
                    if row is None:
                        refused.append((cid, "unknown"))
                        continue
                    if row.state in ("done", "settled") or cid in answered:
                        refused.append((cid, "duplicate"))  # a second answer later in the same page too
                        continue
                    answered[cid] = outcome
                    taken.append(cid)
                    rows.append(_outcome_row(job_id, cid, outcome, cost, sync_cost, now))
                for start in range(0, len(rows), _CHUNK):
                    conn.execute(outcomes.insert(), rows[start : start + _CHUNK])
                settled = decide([found[cid] for cid in taken], answered) if decide is not None else []
                now_settled = {s.custom_id for s in settled}
                for state, group in (
                    ("settled", [cid for cid in taken if cid in now_settled]),
                    ("done", [cid for cid in taken if cid not in now_settled]),
                ):
                    for start in range(0, len(group), _CHUNK):
                        conn.execute(
                            requests.update()
                            .where(requests.c.job_id == job_id, requests.c.custom_id.in_(group[start : start + _CHUNK]))
                            .values(state=state)
                        )
                moves = [s for s in settled if s.item_state is not None]
                if moves:
                    self._move_items(
                        conn,
                        job_id,
                        {s.item_id: s.item_state for s in moves if s.item_state is not None},
                        outputs={s.item_id: s.output for s in moves if s.output is not None},
                        errors={s.item_id: s.error for s in moves if s.error is not None},
                        known={r.item_id: r.item_state.value for r in found.values() if r.item_state is not None},
                    )
            return Recorded(taken, refused, [cid for cid in taken if cid in now_settled])
        except sa.exc.IntegrityError:
            return Recorded(*self._record_one_by_one(job_id, entries), [])

    def _page_rows(
        self, conn: sa.Connection, job_id: str, chunk: Sequence[str], decide: Decide | None
    ) -> dict[str, PageRow]:
        """What recording (and, with `decide`, settling) a chunk of custom_ids needs: one query, joined with the
        items. The request's body is read only when `decide` asks for it."""
        bodies = decide is not None and decide.bodies
        cols = [requests.c.custom_id, requests.c.state, requests.c.item_id, requests.c.part, requests.c.mode]
        if decide is None:
            q = sa.select(*cols, sa.null(), sa.null())
        else:
            q = sa.select(*cols, items.c.state, requests.c.payload if bodies else sa.null()).outerjoin(
                items, sa.and_(items.c.job_id == requests.c.job_id, items.c.item_id == requests.c.item_id)
            )
        rows = conn.execute(q.where(requests.c.job_id == job_id, requests.c.custom_id.in_(chunk))).all()
        return {
            r[0]: PageRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                ItemState(r[5]) if r[5] is not None else None,
                Request.model_validate(r[6]) if r[6] is not None else None,
            )
            for r in rows
        }

    def _record_one_by_one(
        self, job_id: str, entries: Sequence[tuple[str, Outcome, float, float]]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        taken: list[str] = []
        refused: list[tuple[str, str]] = []
        for cid, outcome, cost, sync_cost in entries:
            try:
                self.record_outcome(job_id, cid, outcome, cost_usd=cost, sync_cost_usd=sync_cost)
                taken.append(cid)
            except UnknownRequest:
                refused.append((cid, "unknown"))
            except (DuplicateOutcome, sa.exc.IntegrityError):
                refused.append((cid, "duplicate"))
        return taken, refused


def _outcome_row(
    job_id: str, custom_id: str, outcome: Outcome, cost: float, sync_cost: float, now: datetime
) -> dict[str, Any]:
    usage = outcome.usage if isinstance(outcome, Succeeded | Errored) else None
    return dict(
        job_id=job_id,
        custom_id=custom_id,
        status=outcome.status,
        kind=outcome.kind.value if isinstance(outcome, Errored) else None,
        payload=outcome.model_dump(mode="json"),
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cache_write_tokens=usage.cache_write_tokens if usage else 0,
        cache_read_tokens=usage.cache_read_tokens if usage else 0,
        cost_usd=cost,
        sync_cost_usd=sync_cost,
        recorded_at=now,
    )
