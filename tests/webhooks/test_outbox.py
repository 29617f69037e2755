"""The notify outbox in the store (SQLite and Postgres): an event is queued with the state change it announces, in
its transaction, and only when the state really changes; an event without a state change is queued once per key."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from freight.domain import Batch, BatchState, IllegalTransition, Job, JobState
from freight.runner.job import RunOptions
from freight.runner.notify import watch_stuck
from freight.store import Store
from freight.store.outbox import Notification

URLS = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")


def _job(store: Store, tmp_path: Path) -> tuple[str, RunOptions]:
    opts = RunOptions(input=str(tmp_path), provider="openai", model="scripted", extra={"notify": list(URLS)})
    store.create_job(Job(job_id="job_1", provider="openai", model="scripted", config=asdict(opts)))
    return "job_1", opts


def test_an_event_is_queued_with_its_state_change_and_never_twice(db_url: str, tmp_path: Path) -> None:
    with Store(db_url) as store:
        job_id, _ = _job(store, tmp_path)
        store.set_job_state(job_id, JobState.RUNNING)
        done = Notification("job.completed", {"id": job_id}, URLS)
        store.set_job_state(job_id, JobState.COMPLETED, notify=done)
        rows = store.notifications(job_id)
        assert [(r["url"], r["type"], r["state"]) for r in rows] == [(u, "job.completed", "pending") for u in URLS]
        assert {r["event_id"] for r in rows} == {done.event_id}
        # A resumed job sets the state it already has: nothing new is queued.
        store.set_job_state(job_id, JobState.COMPLETED, notify=Notification("job.completed", {"id": job_id}, URLS))
        assert len(store.notifications(job_id)) == 2
        # A change refused as illegal queues nothing either: the event and the change are one transaction.
        with pytest.raises(IllegalTransition):
            store.set_job_state(job_id, JobState.RUNNING, notify=Notification("job.stopped", {}, URLS))
        assert len(store.notifications(job_id)) == 2

        first = rows[0]["id"]
        store.notification_attempted(first, "HTTP 500")
        store.notification_attempted(first, None)
        [row] = [r for r in store.notifications(job_id) if r["id"] == first]
        assert (row["state"], row["attempts"], row["last_error"]) == ("delivered", 2, None)
        assert [r["url"] for r in store.notifications(job_id, state="pending")] == [URLS[1]]


def test_a_stuck_batch_needs_attention_once(db_url: str, tmp_path: Path) -> None:
    with Store(db_url) as store:
        job_id, opts = _job(store, tmp_path)
        store.set_job_state(job_id, JobState.RUNNING)
        expires = datetime.now(UTC) + timedelta(hours=24)
        local = store.create_batch(job_id, "openai", [])
        batch = Batch(provider="openai", provider_batch_id="batch_1", state=BatchState.IN_PROGRESS, expires_at=expires)
        store.mark_submitted(local, batch)
        assert watch_stuck(store, job_id, opts, now=expires) == [], "inside its window (and the grace hour)"
        [said] = watch_stuck(store, job_id, opts, now=expires + timedelta(hours=2))
        assert "batch_1" in said and "past its window" in said
        assert watch_stuck(store, job_id, opts, now=expires + timedelta(hours=3)) == [], "once per batch"
        rows = store.notifications(job_id)
        assert [r["type"] for r in rows] == ["job.needs_attention"] * 2  # one per URL
        assert '"reason":"stuck_batch"' in rows[0]["body"]
