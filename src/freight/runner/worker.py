"""`freight worker`: claim queued jobs from a shared PostgreSQL store and run each to its end, any number at once.

The idea: a worker is `concurrency` slots, each a loop of claim -> run -> release. A claim is the job's lease with a
short ttl (`store/claims.py`), renewed by a heartbeat while the slot works; the run is the ordinary `Runner` loop,
so every invariant stated in `runner/loop.py` holds: a batch is recorded `preparing` before it is sent (a worker killed
in between is followed by one that finds the batch at the provider instead of sending it again), and an outcome is
one primary-key row. The unit of claim is the job: one worker advances a job at a time, many jobs share the pool.

What may be killed where: anywhere. A worker killed outright keeps its claims until their heartbeat expires (at once
for a dead process on the same host), then another worker takes each job over and resumes it. A worker told to stop
(`stop()`, SIGTERM) finishes the step in hand in every slot, releases its claims, and returns.

The worker names no provider: `connect` (given by the caller) opens the adapter for a job's options.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from freight.domain import FreightError, JobHeld, JobState, JobStopped
from freight.providers import Provider
from freight.runner.job import RunOptions, resume_job
from freight.runner.loop import Runner
from freight.store import JobLease, Store
from freight.store.claims import claim_owner

Connect = Callable[[RunOptions], AbstractContextManager[Provider]]
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class WorkerOptions:
    concurrency: int = 1
    max_jobs: int | None = None  # take at most this many jobs in all, then exit once they are done
    lease_ttl: float = 30.0  # seconds a claim outlives its last heartbeat
    poll_interval: float = 5.0  # a job's batches are polled this often (backing off when nothing moves)
    idle_poll: float = 2.0  # seconds between looks at the queue when there is nothing to claim
    exit_when_idle: bool = False  # exit once no queued job is left open (for batch use and benchmarks)
    max_active_batches: int | None = None  # per provider, across every worker of the store


class Worker:
    def __init__(self, store: Store, connect: Connect, opts: WorkerOptions, *, say: Say = _quiet) -> None:
        self.store = store
        self.connect = connect
        self.opts = opts
        self.say = say
        self.worker_id = f"w-{secrets.token_hex(6)}"
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._taken = 0  # jobs claimed so far, for --max-jobs
        self.finished: list[str] = []  # jobs this worker ran to their end

    def stop(self) -> None:
        """Finish the step in hand in every slot, release every claim, return from `run`. Safe from a signal."""
        self.stopping.set()

    def run(self) -> None:
        self.store.register_worker(self.worker_id, self.opts.concurrency, self.opts.lease_ttl)
        beat = threading.Thread(target=self._beat, name="worker-heartbeat", daemon=True)
        beat.start()
        try:
            slots = [
                threading.Thread(target=self._slot, args=(n,), name=f"worker-slot-{n}", daemon=True)
                for n in range(self.opts.concurrency)
            ]
            for t in slots:
                t.start()
            for t in slots:
                while t.is_alive():  # joined in steps, so the main thread still takes signals
                    t.join(0.5)
        finally:
            self.stopping.set()
            beat.join(timeout=10)
            self.store.retire_worker(self.worker_id)

    def _beat(self) -> None:
        while not self.stopping.wait(self.opts.lease_ttl / 4):
            with contextlib.suppress(Exception):  # a store hiccup: the next beat tries again, expiry is ttl away
                self.store.heartbeat_worker(self.worker_id, self.opts.lease_ttl)
        with contextlib.suppress(Exception):
            self.store.heartbeat_worker(self.worker_id, self.opts.lease_ttl, state="stopping")

    def _take_turn(self) -> bool:
        """Reserve one of the --max-jobs; False when they are all taken."""
        with self._lock:
            if self.opts.max_jobs is not None and self._taken >= self.opts.max_jobs:
                return False
            self._taken += 1
            return True

    def _give_back(self) -> None:
        with self._lock:
            self._taken -= 1

    def _slot(self, n: int) -> None:
        while not self.stopping.is_set():
            try:
                self._claim_and_run(n)
                return
            except Exception as exc:  # noqa: BLE001 - a store or network failure: said, and the slot carries on
                first = (str(exc).splitlines() or [""])[0]
                self.say(f"{self.worker_id}: slot {n}: {type(exc).__name__}: {first}")
                self.stopping.wait(self.opts.idle_poll)

    def _claim_and_run(self, n: int) -> None:
        owner = claim_owner(self.worker_id, n)
        skip: set[str] = set()  # jobs this slot cannot run (the embedded model): left for `freight run`
        while not self.stopping.is_set():
            if not self._take_turn():
                return
            job_id = self.store.claim_job(owner, self.opts.lease_ttl, frozenset(skip))
            if job_id is None:
                self._give_back()
                if self.opts.exit_when_idle and not self._open_jobs_left():
                    return
                self.stopping.wait(self.opts.idle_poll)
                continue
            lease = JobLease(self.store, job_id, ttl=self.opts.lease_ttl)
            lease.owner = owner  # the claim taken above: acquire renews it and starts its heartbeat
            with lease.acquire():
                if not self._run_job(job_id, lease):
                    skip.add(job_id)
                    self._give_back()

    def _pause(self, seconds: float) -> None:
        self.stopping.wait(seconds)  # a stop ends the wait at once

    def _open_jobs_left(self) -> bool:
        return bool(self.store.queued_jobs(open_only=True))

    def _run_job(self, job_id: str, lease: JobLease) -> bool:
        """Run one claimed job until it ends or this worker stops; False when this worker cannot run it."""
        try:
            job, opts = resume_job(self.store, job_id)
        except FreightError as exc:
            self.say(f"{job_id}: {exc}")
            return True
        if opts.engine:
            self.store.log(job_id, "note", message="a worker cannot run a job on the embedded model: use freight run")
            return False
        self.say(f"{self.worker_id}: claimed {job_id} ({job.state.value})")
        try:
            with self.connect(opts) as provider:
                Runner(
                    self.store,
                    provider,
                    job_id,
                    opts,
                    poll_interval=self.opts.poll_interval,
                    max_poll_interval=max(self.opts.poll_interval, 60.0),
                    batch_size=opts.extra.get("batch_size"),
                    sleep=self._pause,
                    lease=lease,
                    should_stop=self.stopping.is_set,
                    max_active_batches=self.opts.max_active_batches,
                ).run()
        except JobStopped as exc:
            self.say(f"{job_id} stopped: {exc}")
        except JobHeld as exc:
            self.say(str(exc))
        except FreightError as exc:  # anything else the loop raises for a user: said, and the job left to resume
            self.say(f"{job_id}: {exc}")
        state = self.store.get_job(job_id)
        if state is not None and state.state is JobState.COMPLETED:
            self.finished.append(job_id)
            self.say(f"{self.worker_id}: {job_id} completed")
        elif self.stopping.is_set():
            self.say(f"{self.worker_id}: released {job_id} ({state.state.value if state else 'gone'})")
        return True
