"""Store queries both dialects' batch endpoints share: create with rows, look up, list pages, stream results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from freight.domain import BatchState
from freight.server.faults import order_key
from freight.server.responses import paged
from freight.server.store import Store, batches, requests

CHUNK = 1000


def insert_requests(conn: sa.Connection, batch_id: str, seed: int, rows: Iterator[tuple[int, str, str]]) -> int:
    """Insert (idx, custom_id, params_json) rows in chunks; return how many."""
    n, chunk = 0, []
    for idx, custom_id, params in rows:
        chunk.append(
            {
                "batch_id": batch_id,
                "idx": idx,
                "custom_id": custom_id,
                "order_key": order_key(seed, "order", batch_id, idx),
                "params": params,
                "state": "pending",
            }
        )
        n += 1
        if len(chunk) >= CHUNK:
            conn.execute(sa.insert(requests), chunk)
            chunk = []
    if chunk:
        conn.execute(sa.insert(requests), chunk)
    return n


def get_batch(store: Store, dialect: str, batch_id: str) -> sa.RowMapping | None:
    with store.read() as conn:
        return (
            conn.execute(
                sa.select(batches).where(
                    batches.c.id == batch_id, batches.c.dialect == dialect, batches.c.deleted.is_(False)
                )
            )
            .mappings()
            .first()
        )


def list_page(
    store: Store, dialect: str, limit: int, after_id: str | None, before_id: str | None
) -> tuple[list[sa.RowMapping], bool] | None:
    """Newest first. `after_id`: the page of older batches after it; `before_id`: the newer ones just before it.
    None when a cursor names no batch."""
    with store.read() as conn:
        q = sa.select(batches).where(batches.c.dialect == dialect, batches.c.deleted.is_(False))
        cursor = after_id or before_id
        if cursor:
            seq = conn.execute(sa.select(batches.c.seq).where(batches.c.id == cursor)).scalar()
            if seq is None:
                return None
            if after_id:
                q = q.where(batches.c.seq < seq).order_by(batches.c.seq.desc())
            else:
                q = q.where(batches.c.seq > seq).order_by(batches.c.seq.asc())
        else:
            q = q.order_by(batches.c.seq.desc())
        rows = list(conn.execute(q.limit(limit + 1)).mappings().all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if before_id:
        rows.reverse()
    return rows, has_more


def result_rows(store: Store, batch_id: str, conn: sa.Connection | None = None) -> Iterator[Any]:
    """(order_key, idx, custom_id, params, outcome, response_id, finished_at) of finished requests, in result order.

    `conn`: read inside that (writer's) transaction, to see rows it has changed but not committed yet.
    """

    def fetch(after: tuple[int, int] | None) -> list[Any]:
        q = sa.select(
            requests.c.order_key,
            requests.c.idx,
            requests.c.custom_id,
            requests.c.params,
            requests.c.outcome,
            requests.c.response_id,
            requests.c.finished_at,
        ).where(requests.c.batch_id == batch_id, requests.c.state == "done")
        if after is not None:
            q = q.where(sa.tuple_(requests.c.order_key, requests.c.idx) > sa.tuple_(*after))
        q = q.order_by(requests.c.order_key, requests.c.idx).limit(CHUNK)
        if conn is not None:
            return list(conn.execute(q).all())
        with store.read() as reader:
            return list(reader.execute(q).all())

    return paged(fetch)


def outcome_of(raw: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(raw)
    return value


def is_ended(row: sa.RowMapping) -> bool:
    return BatchState(row["state"]).terminal
