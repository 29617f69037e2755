"""The lifecycle of a request in the store: recorded, packed into a batch, submitted, answered, settled.

A request's row moves created -> submitted -> done (its one outcome is committed) -> settled (that outcome has been
acted on: the item updated, any retry recorded). The two last steps are separate transactions on purpose: an outcome
is durable before anything acts on it, and a crash between them leaves a `done` request that a resumed run settles.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter

from freight.domain import (
    ITEM_TRANSITIONS,
    FreightError,
    ItemState,
    Outcome,
    Request,
    check_transition,
)
from freight.store.schema import items, requests
from freight.store.store import StoreBase, UnknownRequest, _now

_OUTCOME = TypeAdapter[Outcome](Outcome)
_CHUNK = 500

# (part index, number of parts, chunk group) of a request that is one chunk of a split document.
Part = tuple[int, int, str]


@dataclass(frozen=True)
class Settlement:
    """What acting on one outcome does (see `WorkStore.settle`): for `settle_many`."""

    custom_id: str
    item_id: str
    item_state: ItemState | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    retries: Sequence[Request] = ()
    parts: dict[str, Part] | None = None


class WorkStore(StoreBase):
    """Requests and batches; `freight.store.results.Store` adds outcomes and what is read from them."""

    # --- requests ---------------------------------------------------------------------------------------------

    def add_requests(
        self, job_id: str, reqs: Iterable[Request], mode: str = "batch", parts: dict[str, Part] | None = None
    ) -> None:
        """Record requests before they are sent, and move their items in flight, in one transaction.

        Recording first is what lets a resumed run recognize its own work: a request is never built twice.
        """
        with self.engine.begin() as conn:
            self._insert_requests(conn, job_id, reqs, mode, parts or {})

    def _insert_requests(
        self, conn: sa.Connection, job_id: str, reqs: Iterable[Request], mode: str, parts: dict[str, Part]
    ) -> None:
        """One executemany per page of requests, and one state change per page of items (not a statement each)."""
        now = _now()
        rows: list[dict[str, Any]] = []
        for r in reqs:
            part = parts.get(r.custom_id)
            rows.append(
                dict(
                    job_id=job_id,
                    custom_id=r.custom_id,
                    item_id=r.item_id or "",
                    attempt=r.attempt,
                    parent_custom_id=r.parent_custom_id,
                    fix=r.fix,
                    part=part[0] if part else None,
                    parts=part[1] if part else None,
                    chunk_group=part[2] if part else None,
                    mode=mode,
                    state="created",
                    payload=r.model_dump(mode="json"),
                    created_at=now,
                )
            )
        if not rows:
            return
        for start in range(0, len(rows), _CHUNK):
            conn.execute(requests.insert(), rows[start : start + _CHUNK])
        item_ids = list(dict.fromkeys(r["item_id"] for r in rows if r["item_id"]))
        self._move_items(conn, job_id, {i: ItemState.IN_FLIGHT for i in item_ids})

    def _move_items(
        self,
        conn: sa.Connection,
        job_id: str,
        moves: dict[str, ItemState],
        outputs: dict[str, Any] | None = None,
        errors: dict[str, dict[str, Any]] | None = None,
        known: dict[str, str] | None = None,
    ) -> None:
        """Move many items at once, each checked against the transition table as `_set_item_state` does; items
        already in their new state (with nothing to write) are left alone. `known`: the items' states as read in this
        same transaction, when the caller has them (not read again)."""
        outputs, errors = outputs or {}, errors or {}
        ids = list(moves)
        now = _now()
        changes: list[dict[str, Any]] = []
        targets = set(moves.values())
        same = next(iter(targets)) if len(targets) == 1 and not outputs and not errors else None
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            if same is not None and self._move_all(conn, job_id, chunk, same, now):
                continue
            if known is not None and all(i in known for i in chunk):
                current = known
            else:
                current = dict(
                    conn.execute(
                        sa.select(items.c.item_id, items.c.state).where(
                            items.c.job_id == job_id, items.c.item_id.in_(chunk)
                        )
                    ).all()
                )
            for item_id in chunk:
                if item_id not in current:  # a ready-made request line whose item row is gone: nothing to move
                    continue
                new = moves[item_id]
                check_transition(ITEM_TRANSITIONS, ItemState(current[item_id]), new, f"item {item_id}")
                if current[item_id] == new.value and item_id not in outputs and item_id not in errors:
                    continue
                changes.append(
                    {
                        "k_item": item_id,
                        "v_state": new.value,
                        "v_updated_at": now,
                        "v_output": outputs.get(item_id),
                        "v_error": errors.get(item_id),
                    }
                )
        # Each kind of change is its own executemany: a None output must not overwrite one already written.
        for has_output, has_error in ((False, False), (True, False), (False, True), (True, True)):
            group = [
                c
                for c in changes
                if (c["v_output"] is not None) == has_output and (c["v_error"] is not None) == has_error
            ]
            if not group:
                continue
            cols = ["state", "updated_at"] + ["output"] * has_output + ["error"] * has_error
            conn.execute(
                items.update()
                .where(items.c.job_id == job_id, items.c.item_id == sa.bindparam("k_item"))
                .values({c: sa.bindparam(f"v_{c}") for c in cols}),
                [{k: c[k] for k in ("k_item", *(f"v_{n}" for n in cols))} for c in group],
            )

    def _move_all(self, conn: sa.Connection, job_id: str, chunk: list[str], new: ItemState, now: Any) -> bool:
        """One set-based statement for a chunk of items all moving to `new` with nothing to write (documents going in
        flight): True when every one of them moved. Otherwise the caller checks them one by one (those that moved
        here are in their new state already, and left alone), so a move the transition table forbids still raises."""
        before = [s.value for s, allowed in ITEM_TRANSITIONS.items() if new in allowed and s is not new]
        moved = conn.execute(
            items.update()
            .where(items.c.job_id == job_id, items.c.item_id.in_(chunk), items.c.state.in_(before))
            .values(state=new.value, updated_at=now)
        ).rowcount
        return bool(moved == len(chunk))

    def settle(
        self,
        job_id: str,
        custom_id: str,
        *,
        item_state: ItemState | None = None,
        output: Any = None,
        error: dict[str, Any] | None = None,
        retries: Sequence[Request] = (),
        parts: dict[str, Part] | None = None,
    ) -> bool:
        """Act on a recorded outcome, once: record the retries it calls for and move its item, in one transaction.

        Returns False (and changes nothing) when the request was settled already, so settling is idempotent.
        """
        where = (requests.c.job_id == job_id, requests.c.custom_id == custom_id)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(requests.c.state, requests.c.item_id, requests.c.mode).where(*where)).first()
            if row is None:
                raise UnknownRequest(f"job {job_id}: no request {custom_id!r} to settle")
            if row.state == "settled":
                return False
            if row.state != "done":
                raise FreightError(f"job {job_id}: request {custom_id!r} has no outcome yet ({row.state})")
            conn.execute(requests.update().where(*where).values(state="settled"))
            self._insert_requests(conn, job_id, retries, row.mode, parts or {})
            if item_state is not None:
                self._set_item_state(conn, job_id, row.item_id, item_state, output=output, error=error)
        return True

    def settle_many(self, job_id: str, settlements: Sequence[Settlement]) -> int:
        """`settle` for a page of outcomes, in one transaction with set-based statements: the requests become
        settled, their retries are recorded, their items move. A request settled already is skipped (idempotent, as
        `settle`); one without an outcome raises and nothing of the page is taken. Returns how many were settled.
        An item must appear at most once in a page: the caller settles the others one by one."""
        by_id = {s.custom_id: s for s in settlements}
        ids = list(by_id)
        with self.engine.begin() as conn:
            states: dict[str, tuple[str, str]] = {}
            for start in range(0, len(ids), _CHUNK):
                rows = conn.execute(
                    sa.select(requests.c.custom_id, requests.c.state, requests.c.mode).where(
                        requests.c.job_id == job_id, requests.c.custom_id.in_(ids[start : start + _CHUNK])
                    )
                ).all()
                states.update({cid: (state, mode) for cid, state, mode in rows})
            todo: list[Settlement] = []
            for cid in ids:
                if cid not in states:
                    raise UnknownRequest(f"job {job_id}: no request {cid!r} to settle")
                state, _ = states[cid]
                if state == "settled":
                    continue
                if state != "done":
                    raise FreightError(f"job {job_id}: request {cid!r} has no outcome yet ({state})")
                todo.append(by_id[cid])
            done = [s.custom_id for s in todo]
            for start in range(0, len(done), _CHUNK):
                conn.execute(
                    requests.update()
                    .where(requests.c.job_id == job_id, requests.c.custom_id.in_(done[start : start + _CHUNK]))
                    .values(state="settled")
                )
            for mode in ("batch", "sync"):
                retries = [r for s in todo if states[s.custom_id][1] == mode for r in s.retries]
                parts = {k: v for s in todo if states[s.custom_id][1] == mode for k, v in (s.parts or {}).items()}
                self._insert_requests(conn, job_id, retries, mode, parts)
            moves = [s for s in todo if s.item_state is not None]
            self._move_items(
                conn,
                job_id,
                {s.item_id: s.item_state for s in moves if s.item_state is not None},
                outputs={s.item_id: s.output for s in moves if s.output is not None},
                errors={s.item_id: s.error for s in moves if s.error is not None},
            )
        return len(todo)

    def unsettled(self, job_id: str) -> list[str]:
        """custom_ids whose outcome is recorded but not yet acted on (a run stopped between the two)."""
        with self._read() as conn:
            return list(
                conn.execute(
                    sa.select(requests.c.custom_id)
                    .where(requests.c.job_id == job_id, requests.c.state == "done")
                    .order_by(requests.c.custom_id)
                ).scalars()
            )

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

    def count_item_requests(self, job_id: str, item_id: str) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(requests.c.job_id == job_id, requests.c.item_id == item_id)
                ).scalar_one()
            )

    def requests_in_state(self, job_id: str, state: str, mode: str | None = None, limit: int = _CHUNK) -> list[Request]:
        q = sa.select(requests.c.payload).where(requests.c.job_id == job_id, requests.c.state == state)
        if mode is not None:
            q = q.where(requests.c.mode == mode)
        with self._read() as conn:
            rows = conn.execute(q.order_by(requests.c.created_at, requests.c.custom_id).limit(limit)).scalars().all()
        return [Request.model_validate(p) for p in rows]


def _request_row(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["request"] = Request.model_validate(d.pop("payload"))
    return d
