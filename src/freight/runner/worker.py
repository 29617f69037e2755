"""`freight worker`: claim queued jobs from a shared PostgreSQL store and run each to its end, any number at once.

The idea: a worker is `concurrency` slots, each a loop of claim -> run -> release. A claim is the job's lease with a
short ttl (`store/claims.py`), renewed by a heartbeat while the slot works; the run is the ordinary `Runner` loop,
so every invariant stated in `runner/loop.py` holds: a batch is recorded `preparing` before it is sent (a worker killed
in between is followed by one that finds the batch at the provider instead of sending it again), and an outcome is
one primary-key row. The unit of claim is the job: one worker advances a job at a time, many jobs share the pool.

One job, many workers: the holder claims each of its batches before it polls or ingests it (`runner/steps.py`), and
a slot with no job to take helps instead: it claims the next batch step of a job another worker holds - ingesting an
ended batch's results (record + settle), or polling a batch its holder has not polled lately - does it, and releases
it (`store/step_claims.py`). Creating, packing and submitting stay the holder's alone. A helper never stops a job: an
error it meets leaves the batch to be stepped again, and the holder, meeting the same error, decides.

What may be killed where: anywhere. A worker killed outright keeps its claims until their heartbeat expires (at once
for a dead process on the same host for a job; after the ttl for a batch), then another worker takes each job (or
batch) over and carries on: a batch's results read again take nothing twice. A worker told to stop (`stop()`,
SIGTERM) finishes the step in hand in every slot, releases its claims, and returns.

The worker names no provider: `connect` (given by the caller) opens the adapter for a job's options.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NoReturn

from freight.domain import FreightError, JobHeld, JobState, JobStopped
from freight.providers import Provider, ProviderError
from freight.runner.job import RunOptions, resume_job
from freight.runner.loop import Runner
from freight.runner.steps import StepClaims
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
        self._done = threading.Event()  # every slot has returned: the heartbeat may end
        self.finished: list[str] = []  # jobs this worker ran to their end
        self.helped = 0  # batch steps taken for jobs other workers hold

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
            self._done.set()
            beat.join(timeout=10)
            self.store.retire_worker(self.worker_id)

    def _beat(self) -> None:
        # Beats until the slots are done, not merely told to stop: the step in hand keeps its claims while it ends.
        while not self._done.wait(self.opts.lease_ttl / 4):
            with contextlib.suppress(Exception):  # a store hiccup: the next beat tries again, expiry is ttl away
                state = "stopping" if self.stopping.is_set() else None
                self.store.heartbeat_worker(self.worker_id, self.opts.lease_ttl, state=state)

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
        with Helping(self, owner) as helping:
            while not self.stopping.is_set():
                if not self._take_turn():
                    return
                job_id = self.store.claim_job(owner, self.opts.lease_ttl, frozenset(skip))
                if job_id is None:
                    self._give_back()
                    if helping.step():  # a batch of a job another worker holds: then look again at once
                        continue
                    if self.opts.exit_when_idle and not self._open_jobs_left():
                        return
                    self.stopping.wait(self.opts.idle_poll)
                    continue
                lease = JobLease(self.store, job_id, ttl=self.opts.lease_ttl)
                lease.owner = owner  # the claim taken above: acquire renews it and starts its heartbeat
                with lease.acquire():
                    if not self._run_job(job_id, lease, owner):
                        skip.add(job_id)
                        self._give_back()

    def _pause_for(self, job_id: str) -> Callable[[float], None]:
        """The holder's wait between passes: cut short by a stop, and by another worker moving the job (a batch it
        ingested or polled), so the holder sees at once what is left - or that nothing is, and completes the job."""
        slice_ = max(self.opts.poll_interval, 0.05)

        def pause(seconds: float) -> None:
            mark = self.store.last_event_id(job_id)
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                if self.stopping.wait(min(left, slice_)):
                    return
                if self.store.last_event_id(job_id) != mark:
                    return

        return pause

    def _open_jobs_left(self) -> bool:
        return bool(self.store.queued_jobs(open_only=True))

    def _run_job(self, job_id: str, lease: JobLease, owner: str) -> bool:
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
                    sleep=self._pause_for(job_id),
                    lease=lease,
                    should_stop=self.stopping.is_set,
                    max_active_batches=self.opts.max_active_batches,
                    steps=StepClaims(self.store, owner, self.opts.lease_ttl),
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


class StepLeft(Exception):
    """A helper met an error that would stop the job: it leaves the batch, and the job to its holder."""


class _HelperRunner(Runner):
    """A job's runner as a helper uses it: to poll and ingest one batch it claimed. It never stops the job."""

    def _stop(self, message: str) -> NoReturn:
        raise StepLeft(message)


class Helping:
    """A slot's help for jobs other workers hold: one claimed batch step at a time (`step`). The providers it opens
    (one per job helped) stay open for the slot's life, so a helper does not reconnect for every batch."""

    def __init__(self, worker: Worker, owner: str) -> None:
        self.worker = worker
        self.store = worker.store
        self.owner = owner
        self.runners: dict[str, _HelperRunner] = {}
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> Helping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def step(self) -> bool:
        """Claim, do and release the next batch step there is; False when there is none."""
        opts = self.worker.opts
        found = self.store.next_batch_step(self.owner, opts.lease_ttl, opts.poll_interval)
        if found is None:
            return False
        step, row = found
        try:
            runner = self._runner(row["job_id"])
            if runner is not None:
                self._do(runner, step, row)
        except (StepLeft, FreightError, ProviderError) as exc:
            first = (str(exc).splitlines() or [""])[0]
            self.worker.say(f"{self.worker.worker_id}: left batch {row['id']} of {row['job_id']}: {first}")
        finally:
            self.store.release_batch(row["id"], self.owner)
        self.worker.helped += 1
        return True

    def _do(self, runner: _HelperRunner, step: str, row: dict[str, Any]) -> None:
        if step == "poll":
            batch = runner.provider.get_batch(row["provider_batch_id"])
            if batch.state.value != row["state"] or batch.counts.model_dump() != row["counts"]:
                runner._update(row, batch)
            if not batch.state.terminal:
                return
            # Ended: ingest it under the same claim, renewed (and logged) as an ingest.
            fresh = self.store.claim_batch(row["id"], self.owner, self.worker.opts.lease_ttl, "ingest")
            if fresh is None or fresh["ingested_at"] is not None:
                return
            row = fresh
        runner.ingest(row)

    def _runner(self, job_id: str) -> _HelperRunner | None:
        if job_id not in self.runners:
            try:
                _, opts = resume_job(self.store, job_id)
            except FreightError:
                return None  # ended meanwhile
            if opts.engine:
                return None
            provider = self.stack.enter_context(self.worker.connect(opts))
            self.runners[job_id] = _HelperRunner(
                self.store, provider, job_id, opts, batch_size=opts.extra.get("batch_size")
            )
        return self.runners[job_id]
