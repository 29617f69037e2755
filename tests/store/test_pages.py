"""Outcomes recorded and settled a page at a time (the hot path of ingest), on SQLite and Postgres: one transaction per
page, and still exactly one outcome per request, with the odd custom_id refused without losing the rest."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from freight.domain import (
    IllegalTransition,
    Item,
    ItemState,
    Job,
    JobState,
    Message,
    Request,
    StopReason,
    Succeeded,
    Usage,
)
from freight.store import Settlement, Store
from freight.store.schema import outcomes

N = 1200  # more than two pages of the store's 500, so the chunking is exercised


def _req(i: int) -> Request:
    return Request(
        custom_id=f"c{i:05d}",
        model="m",
        max_tokens=10,
        messages=[Message(role="user", content="hi")],
        item_id=f"d{i:05d}",
    )


def _ok(i: int) -> Succeeded:
    return Succeeded(text=f'{{"n": {i}}}', stop_reason=StopReason.END, usage=Usage(input_tokens=3, output_tokens=i))


def _store_with_requests(db_url: str) -> Store:
    store = Store(db_url)
    store.create_job(Job(job_id="j", state=JobState.RUNNING, provider="anthropic", model="m", config={}))
    store.add_items("j", [Item(item_id=f"d{i:05d}", job_id="j", source="", text="t") for i in range(N)])
    store.add_requests("j", [_req(i) for i in range(N)])
    return store


def test_requests_added_in_bulk_move_their_items_in_flight(db_url: str) -> None:
    with _store_with_requests(db_url) as store:
        assert store.item_counts("j") == {"in_flight": N}
        assert store.count_item_requests("j", "d01199") == 1


def test_a_page_of_outcomes_is_recorded_and_the_odd_ones_refused(db_url: str) -> None:
    with _store_with_requests(db_url) as store:
        store.record_outcome("j", "c00007", _ok(7), cost_usd=1.0)
        page = [(f"c{i:05d}", _ok(i), 0.5, 1.0) for i in range(N)]
        page.insert(3, ("never-sent", _ok(0), 0.5, 1.0))
        page.append(("c00010", _ok(99), 0.5, 1.0))  # the same custom_id twice in one page
        taken, refused, _ = store.record_outcomes("j", page)
        assert len(taken) == N - 1 and "c00007" not in taken
        assert sorted(refused) == [("c00007", "duplicate"), ("c00010", "duplicate"), ("never-sent", "unknown")]
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one() == N
        # The first answer is the one kept, and the costs are summed by the database.
        first = store.get_outcome("j", "c00010")
        assert isinstance(first, Succeeded) and first.text == '{"n": 10}'
        assert store.totals("j")["cost_usd"] == pytest.approx(1.0 + 0.5 * (N - 1))
        assert len(store.unsettled("j")) == N


def test_a_page_is_settled_in_one_pass_and_only_once(db_url: str) -> None:
    with _store_with_requests(db_url) as store:
        store.record_outcomes("j", [(f"c{i:05d}", _ok(i), 0.0, 0.0) for i in range(N)])
        retry = Request(**{**_req(1).model_dump(), "custom_id": "c00001--r1", "attempt": 1, "fix": "reask"})
        page = [
            Settlement(f"c{i:05d}", f"d{i:05d}", item_state=ItemState.SUCCEEDED, output={"value": i})
            for i in range(2, N)
        ]
        page.append(Settlement("c00000", "d00000", item_state=ItemState.FAILED, error={"kind": "invalid_request"}))
        page.append(Settlement("c00001", "d00001", retries=[retry]))
        assert store.settle_many("j", page) == N
        assert store.settle_many("j", page) == 0  # idempotent: a resumed run settles nothing twice
        assert store.item_counts("j") == {"succeeded": N - 2, "failed": 1, "in_flight": 1}
        assert store.unsettled("j") == []
        assert [r.custom_id for r in store.requests_in_state("j", "created")] == ["c00001--r1"]
        item = store.item_row("j", "d00005")
        assert item["output"] == {"value": 5} and item["error"] is None


def test_a_page_with_an_illegal_move_changes_nothing(db_url: str) -> None:
    with _store_with_requests(db_url) as store:
        store.record_outcomes("j", [(f"c{i:05d}", _ok(i), 0.0, 0.0) for i in range(3)])
        store.set_item_state("j", "d00002", ItemState.FAILED)
        page = [Settlement(f"c{i:05d}", f"d{i:05d}", item_state=ItemState.SUCCEEDED, output=i) for i in range(3)]
        with pytest.raises(IllegalTransition):
            store.settle_many("j", page)
        assert len(store.unsettled("j")) == 3 and store.item_counts("j")["in_flight"] == N - 1


def test_items_are_read_a_page_at_a_time_with_their_requests(db_url: str) -> None:
    with _store_with_requests(db_url) as store:
        store.record_outcomes("j", [(f"c{i:05d}", _ok(i), 0.25, 0.5) for i in range(N)])
        pages = list(store.item_pages("j"))
        assert [len(p) for p in pages] == [500, 500, 200]
        rows = [pair for p in pages for pair in p]
        assert [row["item_id"] for row, _ in rows] == [f"d{i:05d}" for i in range(N)]
        _, reqs = rows[42]
        assert [(r["custom_id"], r["output_tokens"], r["cost_usd"]) for r in reqs] == [("c00042", 42, 0.25)]
