"""Outcomes in the store: recorded exactly once, and the sums and joins that reports are read from."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from pydantic import TypeAdapter

from freight.domain import Errored, Item, ItemState, Outcome, Request, Succeeded
from freight.store.claims import ClaimStore
from freight.store.deadlines import DeadlineStore
from freight.store.outbox import OutboxStore
from freight.store.schema import items, outcomes, requests
from freight.store.store import DuplicateOutcome, UnknownRequest, _item, _now
from freight.store.work import _CHUNK, Settlement, WorkStore, _request_row

_OUTCOME = TypeAdapter[Outcome](Outcome)


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


# What a results line is made of, of an item's columns (`Store.item_pages`).
_LINE_COLUMNS = (items.c.item_id, items.c.seq, items.c.state, items.c.output, items.c.error, items.c.updated_at)
_LINE_KEYS = tuple(c.name for c in _LINE_COLUMNS)
_REQUEST_COLUMNS = (
    requests.c.item_id,
    requests.c.custom_id,
    requests.c.fix,
    outcomes.c.input_tokens,
    outcomes.c.output_tokens,
    outcomes.c.cache_write_tokens,
    outcomes.c.cache_read_tokens,
    outcomes.c.cost_usd,
)
_REQUEST_KEYS = tuple(c.name for c in _REQUEST_COLUMNS)


class Recorded(NamedTuple):
    taken: list[str]  # recorded now
    refused: list[tuple[str, str]]  # (custom_id, "unknown" | "duplicate")
    settled: list[str]  # of those taken, the ones `decide` settled in the same transaction


class Decide(Protocol):
    """Settle what can be settled from the page in hand (see `Store.record_outcomes`)."""

    bodies: bool  # whether the decision needs each request's body

    def __call__(self, rows: Sequence[PageRow], outcomes: Mapping[str, Outcome]) -> list[Settlement]: ...


class Store(WorkStore, ClaimStore, DeadlineStore, OutboxStore):
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

    def outcomes_of(self, job_id: str, custom_ids: Sequence[str]) -> dict[str, Outcome]:
        """The outcomes of a page of requests, in one query per 500."""
        found: dict[str, Outcome] = {}
        with self._read() as conn:
            for start in range(0, len(custom_ids), _CHUNK):
                rows = conn.execute(
                    sa.select(outcomes.c.custom_id, outcomes.c.payload).where(
                        outcomes.c.job_id == job_id, outcomes.c.custom_id.in_(custom_ids[start : start + _CHUNK])
                    )
                ).all()
                found.update({cid: _OUTCOME.validate_python(p) for cid, p in rows})
        return found

    def requests_of(self, job_id: str, custom_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """`get_request` for a page of custom_ids, in one query per 500."""
        found: dict[str, dict[str, Any]] = {}
        with self._read() as conn:
            for start in range(0, len(custom_ids), _CHUNK):
                rows = (
                    conn.execute(
                        requests.select().where(
                            requests.c.job_id == job_id, requests.c.custom_id.in_(custom_ids[start : start + _CHUNK])
                        )
                    )
                    .mappings()
                    .all()
                )
                found.update({r["custom_id"]: _request_row(r) for r in rows})
        return found

    def items_of(self, job_id: str, item_ids: Sequence[str]) -> dict[str, Item]:
        """`get_item` for a page of item ids, in one query per 500."""
        found: dict[str, Item] = {}
        with self._read() as conn:
            for start in range(0, len(item_ids), _CHUNK):
                rows = (
                    conn.execute(
                        items.select().where(
                            items.c.job_id == job_id, items.c.item_id.in_(item_ids[start : start + _CHUNK])
                        )
                    )
                    .mappings()
                    .all()
                )
                found.update({r["item_id"]: _item(r) for r in rows})
        return found

    def changed_after_final(self, job_id: str) -> bool:
        """Whether any outcome was recorded after its document became final (another part of a split document, a
        duplicate the hedge allowed ...): that document's results line changed after it was first written."""
        late = (
            sa.select(sa.literal(1))
            .select_from(
                outcomes.join(
                    requests,
                    sa.and_(requests.c.job_id == outcomes.c.job_id, requests.c.custom_id == outcomes.c.custom_id),
                ).join(items, sa.and_(items.c.job_id == requests.c.job_id, items.c.item_id == requests.c.item_id))
            )
            .where(outcomes.c.job_id == job_id, outcomes.c.recorded_at > items.c.updated_at)
            .limit(1)
        )
        with self._read() as conn:
            return conn.execute(late).first() is not None

    def item_pages(
        self, job_id: str, *, states: Iterable[str] | None = None, updated_since: datetime | None = None
    ) -> Iterator[list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
        """Every item in input order (or only those in `states`, changed at or after `updated_since`), a page at a
        time, each with its requests (oldest first) and their outcomes' tokens and cost: two queries per page of 500
        items, whatever the number of documents."""
        last = -1
        where = [items.c.job_id == job_id]
        if states is not None:
            where.append(items.c.state.in_(list(states)))
        if updated_since is not None:
            where.append(items.c.updated_at >= updated_since)
        while True:
            with self._read() as conn:
                # Not the document's text: a results line does not carry it, and it is the widest column. Rows are
                # fetched whole and zipped into dicts: a page is 500 of them, and this is the report's hot loop.
                page = [
                    dict(zip(_LINE_KEYS, r, strict=True))
                    for r in conn.execute(
                        sa.select(*_LINE_COLUMNS).where(*where, items.c.seq > last).order_by(items.c.seq).limit(_CHUNK)
                    ).all()
                ]
                if not page:
                    return
                reqs = conn.execute(
                    sa.select(*_REQUEST_COLUMNS)
                    .outerjoin(
                        outcomes,
                        sa.and_(outcomes.c.job_id == requests.c.job_id, outcomes.c.custom_id == requests.c.custom_id),
                    )
                    .where(requests.c.job_id == job_id, requests.c.item_id.in_([r["item_id"] for r in page]))
                    .order_by(requests.c.created_at, requests.c.custom_id)
                ).all()
                by_item: dict[str, list[dict[str, Any]]] = {}
                for r in reqs:
                    by_item.setdefault(r[0], []).append(dict(zip(_REQUEST_KEYS, r, strict=True)))
            yield [(row, by_item.get(row["item_id"], [])) for row in page]
            last = page[-1]["seq"]

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


@contextlib.contextmanager
def opened(db: str | None, store: Store | None = None) -> Iterator[Store]:
    """`store` as it is (the caller keeps it open), or the store at `db` (None: the default), closed after."""
    if store is not None:
        yield store
        return
    with Store(db) as fresh:
        yield fresh
