"""The main job: pack -> submit -> poll -> ingest -> validate -> remediate, until every document is final.

The store is the only truth. Each pass of the loop reads what to do from it, and every step is committed before it
is acted on: a request is recorded before it is packed, a batch is recorded (`preparing`) before it is submitted, an
outcome is committed before it is settled. So the loop can be killed anywhere and started again (`freight resume`,
or the same command) and it carries on: submitted batches are polled, never sent again; outcomes already recorded
are not recorded twice. The runner names no provider: it speaks the `Provider` protocol only.

One runner per job: `run` and `cancel` hold the job's lease (`freight.store.JobLease`) for as long as they work, so a
second runner on the same job gets `JobHeld` instead of sending every request twice. An error that cannot heal (a
revoked key, a batch the provider does not know, a batch refused as a whole) or a transient one that keeps failing
past its bound stops the job (`JobStopped`, see `runner/stops.py`); nothing is retried forever.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn

from freight.domain import (
    JOB_TRANSITIONS,
    BatchState,
    Canceled,
    Errored,
    ErrorKind,
    ItemState,
    JobState,
    JobStopped,
    Outcome,
    Succeeded,
    Usage,
)
from freight.providers import Provider, ProviderError
from freight.runner.batches import ACTIVE, PAGE, BatchSteps
from freight.runner.budget import Budget, CostCapReached
from freight.runner.crash import crashpoint
from freight.runner.hedge import HedgePolicy, Hedger
from freight.runner.job import RunOptions
from freight.runner.notify import completion, event, needs_attention, watch_stuck
from freight.runner.pace import Pace
from freight.runner.sending import SendSteps
from freight.runner.settle import Settler
from freight.runner.steps import StepClaims
from freight.runner.stops import Strikes, advice
from freight.runner.tokens import TokenCounter
from freight.store import JobLease, Store

# Documents turned into requests (and submitted) at a time, when nothing else sizes the batches: the first batch is
# at the provider while the rest of a large input is still being built.
SLICE = 5000


@dataclass
class Snapshot:
    """What the progress display shows: read from the store, never kept by the loop."""

    job_id: str
    items: dict[str, int]
    batches: list[tuple[str, str, int]]  # (provider batch id, state, requests)
    elapsed: float
    cost_usd: float
    notes: list[str] = field(default_factory=list)  # the notes made since the previous snapshot: show each once
    # Documents already final when this run began (a resumed job's, the sample's): not counted in the rate.
    finished_before: int = 0


def finished(items: dict[str, int]) -> int:
    """Documents that reached their outcome (a terminal `ItemState`), by the store's item counts."""
    return sum(n for state, n in items.items() if ItemState(state).terminal)


class Runner(SendSteps, BatchSteps):
    def __init__(
        self,
        store: Store,
        provider: Provider,
        job_id: str,
        opts: RunOptions,
        *,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        batch_size: int | None = None,
        pace: Pace | None = None,
        sync_concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_progress: Callable[[Snapshot], None] | None = None,
        lease: JobLease | None = None,
        resubmit_unacknowledged: bool = False,
        max_transient_failures: int = 8,
        hedge: HedgePolicy | None = None,
        wall_clock: Callable[[], float] = time.time,
        should_stop: Callable[[], bool] | None = None,
        max_active_batches: int | None = None,
        steps: StepClaims | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.job_id = job_id
        self.opts = opts
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.batch_size = batch_size
        self.pace = pace
        self.sync_concurrency = sync_concurrency
        self.clock = clock
        self.sleep = sleep
        self.on_progress = on_progress
        self.settler = Settler(store, provider, job_id, opts)
        self.notes: list[str] = []
        self._shown = 0
        self._started = clock()
        self._finished_before: int | None = None
        # Held by the caller (the CLI takes it before the job is even created), or taken by run/cancel themselves.
        self.lease = lease
        # After a run died between submitting a batch and hearing back, and the provider cannot say whether it got
        # it: submit it again anyway (the user checked, or accepts paying twice).
        self.resubmit_unacknowledged = resubmit_unacknowledged
        self.strikes = Strikes(max_transient_failures)
        self.tokens = TokenCounter(provider, store, job_id)
        self.budget = Budget(store, self.tokens, job_id, opts)
        # A deadline: move what the batches have not finished to the synchronous API in time (runner/hedge.py).
        self.hedger = Hedger(store, provider, job_id, hedge, wall_clock) if hedge and opts.mode != "sync" else None
        # A worker told to stop (SIGTERM) ends the run after the step in hand; the job stays `running` for the next.
        self.should_stop = should_stop
        # The provider's open batches, counted across every job and worker of the store (`freight worker`).
        self.max_active_batches = max_active_batches
        # The sample gate's valid replies, by custom_id (read when the first requests are built).
        self._sampled: dict[str, tuple[str, Succeeded]] | None = None
        # A worker's step claims (runner/steps.py): other workers may poll and ingest this job's batches meanwhile.
        self.steps = steps

    # --- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> None:
        with self._leased():
            self._run()

    @contextlib.contextmanager
    def _leased(self) -> Iterator[None]:
        if self.lease is not None:
            yield
            return
        with JobLease(self.store, self.job_id) as lease:
            self.lease = lease
            try:
                yield
            finally:
                self.lease = None

    def _run(self) -> None:
        job = self.store.get_job(self.job_id)
        assert job is not None
        self.budget.check_priced([self.opts.model])
        if job.state in (JobState.CREATED, JobState.SAMPLING, JobState.STOPPED):
            self.store.set_job_state(self.job_id, JobState.RUNNING)
        wait = self.poll_interval
        while True:
            if self.lease is not None:
                self.lease.check()
            current = self.store.get_job(self.job_id)
            if current is not None and current.state in (JobState.CANCELING, JobState.CANCELED):
                self.note("the job is being canceled (freight cancel); this run stops")
                self._progress()
                return
            progressed = self.step()
            self._progress()
            if self._finished():
                notify = completion(self.store, self.job_id, self.opts)
                self.store.set_job_state(self.job_id, JobState.COMPLETED, notify=notify)
                return
            if self.budget.blocked is not None:
                progressed |= self._at_cap()
            if self.should_stop is not None and self.should_stop():
                return
            wait = self.poll_interval if progressed else min(wait * 1.5, self.max_poll_interval)
            if not progressed:
                for message in watch_stuck(self.store, self.job_id, self.opts):
                    self.note(message)
                due = self.hedger.due_in() if self.hedger is not None else None
                self.sleep(wait if due is None else max(min(wait, due), min(self.poll_interval, 0.05)))

    def step(self) -> bool:
        """One pass over everything that can move; True when something did."""
        self.budget.blocked = None
        moved = self.settle_unsettled()
        if self.opts.mode == "sync":
            moved |= self.create_first_requests()
            moved |= self.run_sync()
            return moved
        if self.hedger is not None or self.pace is not None:
            moved |= self.create_first_requests()
            if self.hedger is not None:
                moved |= self.hedger.step(self)  # before packing: once hedged, nothing new goes into a batch
            moved |= self.submit_pending()
        else:
            # A batch's worth of documents a pass: the first batch is at the provider while the next is built, and
            # between passes the loop shows progress, renews its lease and sees a cancel, as on any pass.
            created = self.create_first_requests(limit=self._slice())
            moved |= created
            moved |= self.submit_pending()
            if created and not self._poll_due():
                return True  # batches that end meanwhile are taken in at the poll interval, not after the last submit
        moved |= self.run_sync()  # requests of a batch job that no batch can carry (tools)
        moved |= self.poll_batches()
        return moved

    def _slice(self) -> int:
        return min(self.batch_size or SLICE, self.provider.limits.max_requests_per_batch, SLICE)

    def _finished(self) -> bool:
        counts = self.store.item_counts(self.job_id)
        done = not counts.get(ItemState.PENDING.value) and not counts.get(ItemState.IN_FLIGHT.value)
        return done and (self.steps is None or self.steps.quiet(self.job_id))

    def cancel(self) -> None:
        """Cancel every open batch at the provider, take in what they return, and end what is left canceled."""
        with self._leased():
            self._cancel()

    def _cancel(self) -> None:
        for row in self.store.batches(self.job_id, ACTIVE[1:]):
            try:
                self._update(row, self.provider.cancel_batch(row["provider_batch_id"]))
            except ProviderError as exc:
                # An invalid request here is a batch that ended before the cancel reached it: the poll below
                # takes it in. A key or a batch id the provider refuses stops the job instead of polling forever.
                if exc.kind in (ErrorKind.AUTH, ErrorKind.NOT_FOUND):
                    self._stop_on(f"canceling batch {row['provider_batch_id']}", exc)
                self.note(f"canceling {row['provider_batch_id']} failed for now: {exc}")
        for row in self.store.batches(self.job_id, [BatchState.PREPARING]):
            self.store.fail_unsubmitted_batch(row["id"], "the job was canceled before it was submitted")
        wait = self.poll_interval
        while self.store.batches(self.job_id, ACTIVE[1:]):
            if not self.poll_batches():
                self.sleep(wait)
                wait = min(wait * 1.5, self.max_poll_interval)
        self.poll_batches()  # ingest the last ones
        self.settle_unsettled()
        for state in ("created", "submitted"):
            while left := self.store.requests_in_state(self.job_id, state, limit=PAGE):
                self._record_page([(r.custom_id, Canceled()) for r in left], batch=False)
        for item in list(self.store.iter_items(self.job_id, ItemState.PENDING)):
            self.store.set_item_state(
                self.job_id,
                item.item_id,
                ItemState.CANCELED,
                error={"kind": "canceled", "message": "the job was canceled", "raw_type": ""},
            )
        notify = event(self.store, self.job_id, self.opts, "job.stopped", state=JobState.CANCELED, reason="canceled")
        self.store.set_job_state(self.job_id, JobState.CANCELED, notify=notify)

    # --- the cost cap (runner/budget.py) -------------------------------------------------------------------------

    def _at_cap(self) -> bool:
        """The cap kept a request back: cancel what is in flight when asked to, and once nothing is in flight (its
        real cost known, and still no room), stop the job for a human to decide."""
        active = self.store.batches(self.job_id, ACTIVE[1:])
        if active and self.budget.cancel and not self.budget.closed:
            self.budget.closed = True
            self.note(f"cost cap ${self.budget.cap:.4f} reached: canceling {len(active)} batch(es) in flight")
            for row in active:
                try:
                    self._update(row, self.provider.cancel_batch(row["provider_batch_id"]))
                except ProviderError as exc:
                    self.note(f"canceling {row['provider_batch_id']} failed ({exc}); it finishes instead")
            return True
        if self.store.batches(self.job_id, ACTIVE) or self.store.unsettled(self.job_id):
            return False  # in-flight work finishes (and is paid) first
        if not self.budget.closed:
            # Nothing in flight: its real cost (below its worst case) is known now, so there may be room again.
            self.budget.blocked = None
            moved = self.submit_pending() if self.opts.mode != "sync" else False
            moved |= self.run_sync()
            if moved or self.budget.blocked is None:
                return True
        counts = self.store.item_counts(self.job_id)
        undone = counts.get(ItemState.PENDING.value, 0) + counts.get(ItemState.IN_FLIGHT.value, 0)
        spent, cap = self.budget.spent(), self.budget.cap or 0.0
        blocked = self.budget.blocked
        nxt = (
            f" (the next request, {blocked.custom_id}, could cost up to ${self.budget.worst(blocked, True):.4f})"
            if blocked is not None
            else ""
        )
        message = (
            f"cost cap ${cap:.4f} reached: spent ${spent:.4f}; {undone} document(s) not done{nxt}. "
            f"Nothing more was submitted. Raise the cap to finish: freight resume {self.job_id} --max-cost N"
        )
        job = self.store.get_job(self.job_id)
        if job is not None and JobState.STOPPED in JOB_TRANSITIONS[job.state]:
            self.store.set_job_state(self.job_id, JobState.STOPPED)
        self.store.log(self.job_id, "job.stopped", message=message)
        # A stopped job a human must decide about: in its log, and to its --notify URLs (once per cap).
        self.store.log(self.job_id, "job.needs_attention", reason="cost_cap", message=message, **self.budget.summary())
        needs_attention(self.store, self.job_id, self.opts, "cost_cap", message, key=f"cost_cap:{cap}")
        self.note(message)
        self._progress()
        raise CostCapReached(message)

    # --- outcomes -------------------------------------------------------------------------------------------------

    def _record(self, custom_id: str, outcome: Outcome, *, batch: bool, quiet_duplicate: bool = False) -> None:
        self._record_page([(custom_id, outcome)], batch=batch, quiet_duplicate=quiet_duplicate)

    def _record_page(
        self, page: list[tuple[str, Outcome]], *, batch: bool, quiet_duplicate: bool = False, paid: bool = True
    ) -> None:
        """Commit a page of outcomes in one transaction, and act on them (settle). The order is the durability
        guarantee: nothing is acted on before its outcome is durable. The common case (a valid reply to a whole
        document) is settled in the transaction that records it; the rest is settled after the commit, and a crash
        in between leaves `done` requests that the next pass settles."""
        if not page:
            return
        usages = [(cid, o.usage if isinstance(o, Succeeded | Errored) else Usage()) for cid, o in page]
        # Not `paid`: answers the job paid for already (the sample's), whose cost is counted where it was spent.
        costs = self.settler.page_costs(usages, batch) if paid else [(0.0, 0.0)] * len(page)
        taken, refused, settled = self.store.record_outcomes(
            self.job_id,
            [(cid, o, *cost) for (cid, o), cost in zip(page, costs, strict=True)],
            self.settler.decider(),
        )
        for _ in taken:
            crashpoint("ingest.recorded")
        crashpoint("ingest.page_recorded")
        for cid, why in refused:
            if why == "unknown":
                self.note(f"job {self.job_id}: a result arrived for custom_id {cid!r}, which it never sent")
            elif not quiet_duplicate:
                self.note(f"custom_id {cid} was answered twice; the first answer was kept")
        done = set(settled)
        self.settler.settle_page([cid for cid in taken if cid not in done])

    def settle_unsettled(self) -> bool:
        pending = self.store.unsettled(self.job_id) if self.steps is None else self.steps.unsettled(self.job_id)
        for start in range(0, len(pending), PAGE):
            self.settler.settle_page(pending[start : start + PAGE])
        return bool(pending)

    # --- batches the provider reports on, and stopping ----------------------------------------------------------

    def _stop_on(self, what: str, exc: ProviderError, *, transient: bool = False) -> NoReturn:
        if transient:
            self._stop(
                f"{what} failed {self.strikes.limit + 1} times in a row, the last time: {exc}. The job is saved: "
                f"run `freight resume {self.job_id}` once the provider answers again"
            )
        self._stop(f"{what}: {str(exc).rstrip('.')}. {advice(self.provider, exc, self.job_id)}")

    def _stop(self, message: str) -> NoReturn:
        """The job becomes `stopped` (resumable), the reason is in its log, and the run ends with `JobStopped`."""
        job = self.store.get_job(self.job_id)
        if job is not None and JobState.STOPPED in JOB_TRANSITIONS[job.state]:
            notify = event(
                self.store,
                self.job_id,
                self.opts,
                "job.stopped",
                state=JobState.STOPPED,
                reason="error",
                message=message,
            )
            self.store.set_job_state(self.job_id, JobState.STOPPED, notify=notify)
        self.store.log(self.job_id, "job.stopped", message=message)
        self._progress()
        raise JobStopped(message)

    # --- progress -------------------------------------------------------------------------------------------------

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.store.log(self.job_id, "note", message=message)

    def snapshot(self) -> Snapshot:
        items = self.store.item_counts(self.job_id)
        if self._finished_before is None:  # the first snapshot is taken as the loop starts
            self._finished_before = finished(items)
        return Snapshot(
            job_id=self.job_id,
            items=items,
            finished_before=self._finished_before,
            batches=[
                (r["provider_batch_id"] or "(preparing)", r["state"], r["n_requests"])
                for r in self.store.batches(self.job_id)
            ],
            elapsed=self.clock() - self._started,
            cost_usd=self.store.totals(self.job_id)["cost_usd"],
            notes=self.notes[self._shown :],
        )

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.snapshot())
        self._shown = len(self.notes)
