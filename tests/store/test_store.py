"""The job store on SQLite and Postgres: migrations, every state transition, exactly one outcome per request."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa

from freight.domain import (
    BATCH_TRANSITIONS,
    ITEM_TRANSITIONS,
    JOB_TRANSITIONS,
    Batch,
    BatchState,
    Canceled,
    Errored,
    ErrorKind,
    Expired,
    IllegalTransition,
    Item,
    ItemState,
    Job,
    JobState,
    Message,
    Request,
    RequestCounts,
    Succeeded,
    Usage,
)
from freight.store import DuplicateOutcome, Store, UnknownRequest
from freight.store.schema import MIGRATIONS, schema_migrations


def _job(store: Store, job_id: str = "job1", state: JobState = JobState.CREATED) -> Job:
    return store.create_job(Job(job_id=job_id, state=state, provider="anthropic", model="m", config={"a": 1}))


def _req(cid: str, item: str = "doc1", attempt: int = 0) -> Request:
    return Request(
        custom_id=cid,
        model="m",
        max_tokens=10,
        messages=[Message(role="user", content="hi")],
        item_id=item,
        attempt=attempt,
    )


def test_migrations_applied_once_and_recorded(db_url: str) -> None:
    with Store(db_url) as store:
        with store.engine.connect() as conn:
            versions = list(conn.execute(sa.select(schema_migrations.c.version)).scalars())
        assert versions == [v for v, _, _ in MIGRATIONS]
    # Reopening applies nothing again and keeps the data.
    with Store(db_url) as store:
        _job(store)
    with Store(db_url) as store:
        assert store.get_job("job1") is not None


def test_job_round_trip_and_listing(db_url: str) -> None:
    with Store(db_url) as store:
        _job(store, "a")
        _job(store, "b")
        job = store.get_job("a")
        assert job is not None and job.config == {"a": 1} and job.state is JobState.CREATED
        assert job.created_at is not None and job.created_at.tzinfo is not None
        assert {j.job_id for j in store.list_jobs()} == {"a", "b"}
        assert store.get_job("nope") is None


@pytest.mark.parametrize("old,new", list(itertools.product(JobState, JobState)))
def test_every_job_transition(db_url: str, old: JobState, new: JobState) -> None:
    with Store(db_url) as store:
        _job(store, state=old)
        allowed = new == old or new in JOB_TRANSITIONS[old]
        if allowed:
            store.set_job_state("job1", new)
        else:
            with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value}"):
                store.set_job_state("job1", new)
        job = store.get_job("job1")
        assert job is not None and job.state is (new if allowed else old)


@pytest.mark.parametrize("old,new", list(itertools.product(ItemState, ItemState)))
def test_every_item_transition(db_url: str, old: ItemState, new: ItemState) -> None:
    with Store(db_url) as store:
        _job(store)
        store.add_items("job1", [Item(item_id="d", job_id="job1", source="d.txt", text="t", state=old)])
        allowed = new == old or new in ITEM_TRANSITIONS[old]
        if allowed:
            store.set_item_state("job1", "d", new, output={"x": 1} if new is ItemState.SUCCEEDED else None)
        else:
            with pytest.raises(IllegalTransition):
                store.set_item_state("job1", "d", new)
        item = store.get_item("job1", "d")
        assert item is not None and item.state is (new if allowed else old)


def _batch_in(store: Store, state: BatchState) -> int:
    """A batch driven to `state` through legal steps only."""
    store.add_requests("job1", [_req("c1")])
    local = store.create_batch("job1", "anthropic", ["c1"])
    path = {
        BatchState.PREPARING: [],
        BatchState.FAILED: [],
        BatchState.SUBMITTED: [BatchState.SUBMITTED],
        BatchState.IN_PROGRESS: [BatchState.SUBMITTED, BatchState.IN_PROGRESS],
        BatchState.FINALIZING: [BatchState.SUBMITTED, BatchState.IN_PROGRESS, BatchState.FINALIZING],
        BatchState.ENDED: [BatchState.SUBMITTED, BatchState.ENDED],
        BatchState.CANCELING: [BatchState.SUBMITTED, BatchState.CANCELING],
        BatchState.CANCELED: [BatchState.SUBMITTED, BatchState.CANCELED],
        BatchState.EXPIRED: [BatchState.SUBMITTED, BatchState.EXPIRED],
    }[state]
    if state is BatchState.FAILED:
        store.fail_unsubmitted_batch(local, "refused")
    for i, step in enumerate(path):
        b = Batch(provider="anthropic", provider_batch_id="msgbatch_1", state=step)
        if i == 0:
            store.mark_submitted(local, b)
        else:
            store.update_batch(local, b)
    return local


@pytest.mark.parametrize("old,new", list(itertools.product(BatchState, BatchState)))
def test_every_batch_transition(db_url: str, old: BatchState, new: BatchState) -> None:
    with Store(db_url) as store:
        _job(store)
        local = _batch_in(store, old)
        update = Batch(
            provider="anthropic", provider_batch_id="msgbatch_1", state=new, counts=RequestCounts(succeeded=1)
        )
        allowed = new == old or new in BATCH_TRANSITIONS[old]
        if old is BatchState.PREPARING and new is BatchState.SUBMITTED:
            store.mark_submitted(local, update)
        elif allowed:
            assert store.update_batch(local, update)
        elif old in (BatchState.PREPARING, BatchState.FAILED):
            # Never submitted: no provider reports on it, and our own illegal moves raise.
            with pytest.raises(IllegalTransition):
                store.update_batch(local, update)
        else:
            # The provider is the truth about its own batch: whatever it reports is recorded, flagged unexpected.
            assert not store.update_batch(local, update)
            assert store.events("job1", kind="batch.state")[-1]["data"]["unexpected"] is True
        recorded = allowed or old not in (BatchState.PREPARING, BatchState.FAILED)
        (row,) = store.batches("job1")
        assert row["state"] == (new if recorded else old).value
        if recorded and new.terminal:
            assert row["ended_at"] is not None


def test_submission_is_recorded_before_and_after(db_url: str) -> None:
    with Store(db_url) as store:
        _job(store)
        store.add_items("job1", [Item(item_id="doc1", job_id="job1", source="a", text="t")])
        store.add_requests("job1", [_req("c1"), _req("c2")])
        assert store.get_item("job1", "doc1").state is ItemState.IN_FLIGHT  # type: ignore[union-attr]
        assert [r.custom_id for r in store.iter_pending_requests("job1")] == ["c1", "c2"]
        local = store.create_batch("job1", "anthropic", ["c1", "c2"])
        # Claimed by a preparing batch: not pending any more, so a resumed run cannot pack them twice.
        assert list(store.iter_pending_requests("job1")) == []
        assert store.batches("job1")[0]["provider_batch_id"] is None
        store.mark_submitted(
            local, Batch(provider="anthropic", provider_batch_id="msgbatch_x", state=BatchState.IN_PROGRESS)
        )
        row = store.batches("job1")[0]
        assert row["provider_batch_id"] == "msgbatch_x" and row["state"] == "in_progress"
        assert {r["state"] for r in store.requests_where("job1")} == {"submitted"}
        assert store.batch_custom_ids(local) == ["c1", "c2"]
        kinds = [e["kind"] for e in store.events("job1")]
        assert kinds.index("batch.prepared") < kinds.index("batch.submitted") < kinds.index("batch.state")


@pytest.mark.parametrize(
    "outcome",
    [
        Succeeded(text="ok", parsed={"a": 1}, usage=Usage(input_tokens=10, output_tokens=5, cache_read_tokens=2)),
        Errored(kind=ErrorKind.CONTEXT_OVERFLOW, raw_type="invalid_request_error", message="prompt is too long"),
        Canceled(),
        Expired(),
    ],
    ids=lambda o: o.status,
)
def test_exactly_one_outcome_per_request(db_url: str, outcome: object) -> None:
    with Store(db_url) as store:
        _job(store)
        store.add_requests("job1", [_req("c1")])
        store.record_outcome("job1", "c1", outcome, cost_usd=0.5, sync_cost_usd=1.0)  # type: ignore[arg-type]
        assert store.get_outcome("job1", "c1") == outcome
        with pytest.raises(DuplicateOutcome, match="c1"):
            store.record_outcome("job1", "c1", Canceled())
        with pytest.raises(UnknownRequest, match="never sent"):
            store.record_outcome("job1", "ghost", Canceled())
        assert store.get_outcome("job1", "c1") == outcome
        assert store.requests_where("job1", custom_id="c1")[0]["state"] == "done"


def test_totals_are_summed_by_the_database(db_url: str) -> None:
    with Store(db_url) as store:
        _job(store)
        store.add_requests("job1", [_req(f"c{i}") for i in range(3)])
        for i in range(3):
            store.record_outcome(
                "job1",
                f"c{i}",
                Succeeded(text="x", usage=Usage(input_tokens=100, output_tokens=10)),
                cost_usd=0.25,
                sync_cost_usd=0.5,
            )
        t = store.totals("job1")
        assert t["input_tokens"] == 300 and t["output_tokens"] == 30
        assert t["cost_usd"] == pytest.approx(0.75) and t["sync_cost_usd"] == pytest.approx(1.5)


def test_items_stream_in_input_order_across_pages(db_url: str) -> None:
    with Store(db_url) as store:
        _job(store)
        n = store.add_items(
            "job1", (Item(item_id=f"d{999 - i}", job_id="job1", source="f", text="t") for i in range(1200))
        )
        assert n == 1200
        ids = [it.item_id for it in store.iter_items("job1")]
        assert ids == [f"d{999 - i}" for i in range(1200)]
        assert store.item_counts("job1") == {"pending": 1200}


def test_a_failed_transition_changes_nothing(db_url: str) -> None:
    with Store(db_url) as store:
        _job(store, state=JobState.COMPLETED)
        before = len(store.events("job1"))
        with pytest.raises(IllegalTransition):
            store.set_job_state("job1", JobState.RUNNING)
        assert len(store.events("job1")) == before
