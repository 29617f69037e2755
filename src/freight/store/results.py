"""The store as the runner uses it; here, what is read from outcomes: the sums and joins reports are made of.
Recording outcomes is `store/recording.py`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter

from freight.domain import Item, Outcome
from freight.store.claims import ClaimStore
from freight.store.deadlines import DeadlineStore
from freight.store.outbox import OutboxStore
from freight.store.recording import RecordStore
from freight.store.schema import items, outcomes, requests
from freight.store.store import _item
from freight.store.work import _CHUNK, _request_row

_OUTCOME = TypeAdapter[Outcome](Outcome)


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


class Store(RecordStore, ClaimStore, DeadlineStore, OutboxStore):
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


@contextlib.contextmanager
def opened(db: str | None, store: Store | None = None) -> Iterator[Store]:
    """`store` as it is (the caller keeps it open), or the store at `db` (None: the default), closed after."""
    if store is not None:
        yield store
        return
    with Store(db) as fresh:
        yield fresh
