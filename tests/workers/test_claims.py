"""Claiming queued jobs on PostgreSQL: one holder per job, priority first, dead claims taken over, stopped jobs left
for a person; and the per-provider limit of open batches shared by every worker of a store."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from freight.domain import Job, JobState
from freight.store import Store
from freight.store.schema import leases


def _job(store: Store, job_id: str, state: JobState = JobState.CREATED, priority: int = 0) -> None:
    store.create_job(Job(job_id=job_id, provider="anthropic", model="m", config={}))
    if state is not JobState.CREATED:
        store.set_job_state(job_id, JobState.RUNNING)
        if state is not JobState.RUNNING:
            store.set_job_state(job_id, state)
    store.enqueue_job(job_id, priority)


def test_each_job_has_one_holder_and_higher_priority_goes_first(pg_url: str) -> None:
    with Store(pg_url) as store:
        _job(store, "low", priority=0)
        _job(store, "high", priority=5)
        _job(store, "done", JobState.COMPLETED, priority=9)
        _job(store, "stopped", JobState.STOPPED, priority=9)
        assert store.claim_job("w1/0", ttl=60) == "high"
        assert store.claim_job("w2/0", ttl=60) == "low"
        # Completed jobs have nothing to do; a stopped one waits for `freight resume` (its cause must be fixed).
        assert store.claim_job("w3/0", ttl=60) is None
        holder = store.lease_holder("high")
        assert holder is not None and holder.owner == "w1/0"


def test_claimers_racing_never_share_a_job(pg_url: str) -> None:
    with Store(pg_url) as store:
        for n in range(12):
            _job(store, f"job-{n}")
        won: list[str | None] = []
        go = threading.Barrier(8)

        def claimer(n: int) -> None:
            go.wait()
            won.append(store.claim_job(f"w{n}/0", ttl=60))

        threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        taken = [j for j in won if j is not None]
        assert len(taken) == 8 and len(set(taken)) == 8


def test_a_claim_whose_heartbeat_expired_is_taken_over(pg_url: str) -> None:
    with Store(pg_url) as store:
        _job(store, "orphan", JobState.RUNNING)
        assert store.claim_job("gone/0", ttl=60) == "orphan"
        assert store.claim_job("other/0", ttl=60) is None  # live: left alone
        with store.engine.begin() as conn:  # the holder (on another machine, say) stopped beating a while ago
            past = conn.execute(sa.select(leases.c.heartbeat_at)).scalar_one() - timedelta(seconds=1)
            conn.execute(leases.update().values(expires_at=past, host="elsewhere"))
        assert store.claim_job("other/0", ttl=60) == "orphan"
        assert not store.heartbeat_lease("orphan", "gone/0")  # the old holder learns it lost the job


def test_workers_racing_for_the_last_batch_slots_open_no_more_than_the_limit(pg_url: str) -> None:
    with Store(pg_url) as store:
        for n in range(6):
            store.create_job(Job(job_id=f"j{n}", provider="anthropic", model="m", config={}))
        made: list[int | None] = []
        go = threading.Barrier(6)

        def packer(n: int) -> None:
            go.wait()
            made.append(store.create_batch_within(f"j{n}", "anthropic", [], limit=3))

        threads = [threading.Thread(target=packer, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(m is not None for m in made) == 3
        assert store.active_batches("anthropic") == 3
        assert store.create_batch_within("j0", "openai", [], limit=3) is not None  # another provider, its own limit


@pytest.mark.parametrize("include_dead", [False, True])
def test_workers_are_listed_with_their_claims(pg_url: str, include_dead: bool) -> None:
    with Store(pg_url) as store:
        _job(store, "a")
        store.register_worker("w-live", concurrency=2, ttl=60)
        store.register_worker("w-dead", concurrency=1, ttl=-1)  # its heartbeat is already past
        assert store.claim_job("w-live/1", ttl=60) == "a"
        listed = {w.worker_id: w for w in store.list_workers(include_dead=include_dead)}
        assert listed["w-live"].claims == ["a"] and listed["w-live"].alive
        assert ("w-dead" in listed) is include_dead
        store.retire_worker("w-live")
        assert "w-live" not in {w.worker_id for w in store.list_workers(include_dead=True)}
