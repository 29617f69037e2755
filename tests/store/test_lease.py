"""The job lease: one holder at a time, on SQLite and PostgreSQL; a dead holder is taken over; `JobLease` renews it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from freight.domain import ExitCode, JobHeld
from freight.store import JobLease, Store
from freight.store.schema import leases


def test_second_owner_is_refused_and_told_who_holds_it(db_url: str) -> None:
    with Store(db_url) as store:
        taken, me = store.acquire_lease("job_a", "owner-1")
        assert taken and me.owner == "owner-1"
        taken, holder = store.acquire_lease("job_a", "owner-2")
        assert not taken and holder.owner == "owner-1"
        # Renewing one's own lease is fine; another job is another lease.
        assert store.acquire_lease("job_a", "owner-1")[0]
        assert store.acquire_lease("job_b", "owner-2")[0]
        assert store.heartbeat_lease("job_a", "owner-1")
        assert not store.heartbeat_lease("job_a", "owner-2")
        store.release_lease("job_a", "owner-2")  # not its lease: nothing happens
        assert store.lease_holder("job_a") is not None
        store.release_lease("job_a", "owner-1")
        assert store.lease_holder("job_a") is None
        assert store.acquire_lease("job_a", "owner-2")[0]


def test_expired_lease_is_taken_over_and_the_old_holder_learns_it_lost(db_url: str) -> None:
    with Store(db_url) as store:
        assert store.acquire_lease("job_x", "old", ttl=60)[0]
        with store.engine.begin() as conn:  # the old holder stalled: its heartbeat is long past
            row = conn.execute(sa.select(leases.c.heartbeat_at)).scalar_one()
            conn.execute(leases.update().values(expires_at=row - timedelta(seconds=1)))
        taken, holder = store.acquire_lease("job_x", "new")
        assert taken and holder.owner == "new"
        assert not store.heartbeat_lease("job_x", "old")
        assert [e["kind"] for e in store.events("job_x")][-2:] == ["lease.taken_over", "lease.acquired"]


def test_dead_pid_on_this_host_is_taken_over_at_once(db_url: str) -> None:
    code = (
        "import sys; from freight.store import Store; "
        "s = Store(sys.argv[1]); assert s.acquire_lease('job_k', 'dead-owner', ttl=3600)[0]"
    )
    subprocess.run([sys.executable, "-c", code, db_url], check=True, timeout=120)
    with Store(db_url) as store:
        holder = store.lease_holder("job_k")
        assert holder is not None and holder.owner == "dead-owner"  # it exited without releasing
        taken, mine = store.acquire_lease("job_k", "me", ttl=3600)
        assert taken and mine.owner == "me"


def test_many_threads_racing_for_one_lease_one_wins(db_url: str) -> None:
    with Store(db_url) as store:
        wins: list[str] = []
        barrier = threading.Barrier(6)

        def race(n: int) -> None:
            barrier.wait()
            if store.acquire_lease("job_r", f"owner-{n}")[0]:
                wins.append(f"owner-{n}")

        threads = [threading.Thread(target=race, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(wins) == 1


def test_job_lease_raises_held_with_the_holder_and_renews_while_held(db_url: str) -> None:
    with Store(db_url) as store, JobLease(store, "job_l", ttl=0.8) as lease:
        first = store.lease_holder("job_l")
        assert first is not None
        with pytest.raises(JobHeld) as err:
            JobLease(store, "job_l").acquire()
        assert err.value.exit_code == ExitCode.HELD
        assert f"pid {first.pid}" in str(err.value) and "--wait" in str(err.value)
        # The background heartbeat moves expires_at forward (observed in the store, bounded deadline).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = store.lease_holder("job_l")
            if now is not None and now.expires_at > first.expires_at:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the lease was never renewed")
        lease.check()  # still ours
    with Store(db_url) as store:
        assert store.lease_holder("job_l") is None  # released on exit


def test_job_lease_wait_takes_it_once_released(db_url: str) -> None:
    with Store(db_url) as store:
        first = JobLease(store, "job_w").acquire()
        seen: list[int] = []
        sleeps: list[float] = []

        def sleep(s: float) -> None:
            sleeps.append(s)
            if len(sleeps) == 3:
                first.release()

        second = JobLease(store, "job_w", wait=True, on_wait=lambda h: seen.append(h.pid), sleep=sleep).acquire()
        holder = store.lease_holder("job_w")
        assert holder is not None and holder.owner == second.owner
        assert len(seen) == 1 and len(sleeps) == 3
        second.release()
