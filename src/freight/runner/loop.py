"""The main job: pack -> submit -> poll -> ingest -> validate -> remediate, until every document is final.

The store is the only truth. Each pass of the loop reads what to do from it, and every step is committed before it
is acted on: a request is recorded before it is packed, a batch is recorded (`preparing`) before it is submitted, an
outcome is committed before it is settled. So the loop can be killed anywhere and started again (`freight resume`,
or the same command) and it carries on: submitted batches are polled, never sent again; outcomes already recorded
are not recorded twice. The runner names no provider: it speaks the `Provider` protocol only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from freight.domain import (
    BatchState,
    Canceled,
    Errored,
    ErrorKind,
    Expired,
    ItemState,
    JobState,
    Outcome,
    Request,
    Succeeded,
    Usage,
)
from freight.providers import Provider, ProviderError, RequestRefused
from freight.providers.packing import pack_for
from freight.runner.build import build_request
from freight.runner.crash import crashpoint
from freight.runner.ids import base_custom_id
from freight.runner.job import RunOptions
from freight.runner.settle import Settler
from freight.store import DuplicateOutcome, Store, UnknownRequest

ACTIVE = (
    BatchState.PREPARING,
    BatchState.SUBMITTED,
    BatchState.IN_PROGRESS,
    BatchState.FINALIZING,
    BatchState.CANCELING,
)


@dataclass
class Snapshot:
    """What the progress display shows: read from the store, never kept by the loop."""

    job_id: str
    items: dict[str, int]
    batches: list[tuple[str, str, int]]  # (provider batch id, state, requests)
    elapsed: float
    cost_usd: float
    notes: list[str] = field(default_factory=list)


class Runner:
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
        sync_concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_progress: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.job_id = job_id
        self.opts = opts
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.batch_size = batch_size
        self.sync_concurrency = sync_concurrency
        self.clock = clock
        self.sleep = sleep
        self.on_progress = on_progress
        self.settler = Settler(store, provider, job_id, opts)
        self.notes: list[str] = []
        self._started = clock()

    # --- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> None:
        job = self.store.get_job(self.job_id)
        assert job is not None
        if job.state in (JobState.CREATED, JobState.SAMPLING, JobState.STOPPED):
            self.store.set_job_state(self.job_id, JobState.RUNNING)
        wait = self.poll_interval
        while True:
            current = self.store.get_job(self.job_id)
            if current is not None and current.state in (JobState.CANCELING, JobState.CANCELED):
                self.note("the job is being canceled (freight cancel); this run stops")
                return
            progressed = self.step()
            self._progress()
            if self._finished():
                self.store.set_job_state(self.job_id, JobState.COMPLETED)
                return
            wait = self.poll_interval if progressed else min(wait * 1.5, self.max_poll_interval)
            if not progressed:
                self.sleep(wait)

    def step(self) -> bool:
        """One pass over everything that can move; True when something did."""
        moved = self.settle_unsettled()
        moved |= self.create_first_requests()
        if self.opts.mode == "sync":
            moved |= self.run_sync()
        else:
            moved |= self.submit_pending()
            moved |= self.poll_batches()
        return moved

    def _finished(self) -> bool:
        counts = self.store.item_counts(self.job_id)
        return not counts.get(ItemState.PENDING.value) and not counts.get(ItemState.IN_FLIGHT.value)

    def cancel(self) -> None:
        """Cancel every open batch at the provider, take in what they return, and end what is left canceled."""
        for row in self.store.batches(self.job_id, ACTIVE[1:]):
            try:
                self.store.update_batch(row["id"], self.provider.cancel_batch(row["provider_batch_id"]))
            except ProviderError as exc:
                self.note(f"canceling {row['provider_batch_id']} failed: {exc}")
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
            for r in self.store.requests_in_state(self.job_id, state, limit=1_000_000):
                self._record(r.custom_id, Canceled(), batch=False)
        for item in list(self.store.iter_items(self.job_id, ItemState.PENDING)):
            self.store.set_item_state(
                self.job_id,
                item.item_id,
                ItemState.CANCELED,
                error={"kind": "canceled", "message": "the job was canceled", "raw_type": ""},
            )
        self.store.set_job_state(self.job_id, JobState.CANCELED)

    # --- building and sending -------------------------------------------------------------------------------------

    def create_first_requests(self) -> bool:
        template = self.opts.template()
        made = False
        while True:
            batch: list[Request] = []
            for item in self.store.iter_items(self.job_id, ItemState.PENDING):
                batch.append(
                    build_request(
                        template, custom_id=base_custom_id(item.item_id), item_id=item.item_id, document=item.text
                    )
                )
                if len(batch) >= 500:
                    break
            if not batch:
                return made
            self.store.add_requests(self.job_id, batch, mode="sync" if self.opts.mode == "sync" else "batch")
            crashpoint("requests.created")
            made = True

    def submit_pending(self) -> bool:
        moved = False
        # A batch recorded as preparing but never confirmed: the last run stopped between recording and submitting.
        for row in self.store.batches(self.job_id, [BatchState.PREPARING]):
            if not self._adopt(row):
                self._submit(row["id"])
            moved = True
        limits = self.provider.limits
        if self.batch_size:
            limits = limits.model_copy(update={"max_requests_per_batch": self.batch_size})
        try:
            for requests in pack_for(self.provider, self.store.iter_pending_requests(self.job_id), limits):
                local = self.store.create_batch(self.job_id, self.provider.name, [r.custom_id for r in requests])
                crashpoint("submit.before")
                self._submit(local, requests)
                moved = True
        except RequestRefused as exc:
            self._refuse(exc)
            moved = True
        return moved

    def _adopt(self, row: dict[str, Any]) -> bool:
        """Find a batch the provider accepted but this store never heard back about (the run died in between)."""
        try:
            candidates = self.provider.find_batches(self._ref(row["id"]), row["n_requests"], row["created_at"])
        except ProviderError as exc:
            self.note(f"could not look for an earlier submission of batch {row['id']}: {exc}")
            return False
        unknown = [b for b in candidates if not self.store.knows_batch(b.provider_batch_id)]
        if len(unknown) != 1:  # none, or too many to tell apart: submitting again is the safe side
            return False
        found = unknown[0]
        self.store.mark_submitted(row["id"], found)
        self.store.log(self.job_id, "batch.adopted", batch=row["id"], provider_batch_id=found.provider_batch_id)
        return True

    def _ref(self, local: int) -> str:
        return f"{self.job_id}-b{local}"

    def _submit(self, local: int, requests: list[Request] | None = None) -> None:
        if requests is None:
            requests = [r["request"] for r in self.store.requests_where(self.job_id, batch_id=local)]
        try:
            batch = self.provider.submit_batch(requests, ref=self._ref(local))
        except RequestRefused as exc:
            self.store.fail_unsubmitted_batch(local, str(exc))
            self._refuse(exc)
            return
        except ProviderError as exc:
            if exc.kind.retryable:
                self.note(f"submitting a batch failed for now ({exc}); will try again")
                return
            self.store.fail_unsubmitted_batch(local, str(exc))
            for r in requests:
                self._record(r.custom_id, Errored(kind=exc.kind, raw_type=exc.raw_type, message=str(exc)), batch=True)
            return
        crashpoint("submit.after")
        self.store.mark_submitted(local, batch)

    def _refuse(self, exc: RequestRefused) -> None:
        """A request no batch can carry: it ends errored (invalid_request) with the reason, and its item fails."""
        self._record(
            exc.custom_id, Errored(kind=ErrorKind.INVALID_REQUEST, raw_type="refused", message=exc.reason), batch=True
        )
        self.note(str(exc))

    def poll_batches(self) -> bool:
        moved = False
        for row in self.store.batches(self.job_id, ACTIVE[1:]):
            try:
                batch = self.provider.get_batch(row["provider_batch_id"])
            except ProviderError as exc:
                self.note(f"polling {row['provider_batch_id']} failed for now: {exc}")
                continue
            if batch.state.value != row["state"] or batch.counts.model_dump() != row["counts"]:
                self.store.update_batch(row["id"], batch)
                crashpoint("poll.updated")
                moved = True
        for row in self.store.batches(
            self.job_id, [BatchState.ENDED, BatchState.CANCELED, BatchState.EXPIRED, BatchState.FAILED]
        ):
            if row["ingested_at"] is None and row["provider_batch_id"] is not None:
                moved |= self.ingest(row)
        return moved

    def ingest(self, row: dict[str, Any]) -> bool:
        """Record and settle an ended batch's results. A result stream that drops is read again on the next pass;
        what was recorded stays recorded, and a custom_id repeated within one stream is reported, not taken twice."""
        local, pbid = row["id"], row["provider_batch_id"]
        seen: set[str] = set()
        if row["state"] != BatchState.FAILED.value:
            try:
                for result in self.provider.iter_results(pbid):
                    if result.custom_id in seen:
                        self.note(f"batch {pbid}: custom_id {result.custom_id} arrived twice; the first was kept")
                        continue
                    seen.add(result.custom_id)
                    self._record(result.custom_id, result.outcome, batch=True, quiet_duplicate=True)
            except ProviderError as exc:
                self.note(f"reading the results of {pbid} failed ({exc}); will read them again")
                return bool(seen)
        # Whatever the provider never answered still gets its one outcome, and is retried: nothing is lost. A batch
        # the provider failed as a whole (OpenAI: validation, an enqueued-token limit) says so in the outcome.
        unanswered: Outcome = Expired()
        if row["state"] == BatchState.FAILED.value:
            unanswered = Errored(
                kind=ErrorKind.UNKNOWN, raw_type="batch_failed", message=f"the provider failed batch {pbid} as a whole"
            )
        for r in self.store.requests_where(self.job_id, batch_id=local, state="submitted"):
            self._record(r["custom_id"], unanswered, batch=True)
        crashpoint("ingest.before_mark")
        self.store.mark_ingested(local)
        return True

    def run_sync(self) -> bool:
        requests = self.store.requests_in_state(self.job_id, "created", mode="sync", limit=64)
        if not requests:
            return False
        with ThreadPoolExecutor(self.sync_concurrency) as pool:
            for request, outcome in zip(requests, pool.map(self._send, requests), strict=True):
                self._record(request.custom_id, outcome, batch=False)
        return True

    def _send(self, request: Request) -> Succeeded | Errored:
        try:
            return self.provider.send(request)
        except ProviderError as exc:
            return Errored(kind=exc.kind, raw_type=exc.raw_type, message=str(exc))

    # --- outcomes -------------------------------------------------------------------------------------------------

    def _record(self, custom_id: str, outcome: Outcome, *, batch: bool, quiet_duplicate: bool = False) -> None:
        """Commit the outcome, then act on it (settle). The order is the durability guarantee."""
        usage = outcome.usage if isinstance(outcome, Succeeded | Errored) else Usage()
        cost, sync_cost = self.settler.costs(usage, batch, custom_id)
        try:
            self.store.record_outcome(self.job_id, custom_id, outcome, cost_usd=cost, sync_cost_usd=sync_cost)
            crashpoint("ingest.recorded")
        except UnknownRequest as exc:
            self.note(str(exc))
            return
        except DuplicateOutcome:
            if not quiet_duplicate:
                self.note(f"custom_id {custom_id} was answered twice; the first answer was kept")
            return
        self.settler.settle(custom_id)
        crashpoint("ingest.settled")

    def settle_unsettled(self) -> bool:
        pending = self.store.unsettled(self.job_id)
        for cid in pending:
            self.settler.settle(cid)
        return bool(pending)

    # --- progress -------------------------------------------------------------------------------------------------

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.store.log(self.job_id, "note", message=message)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            job_id=self.job_id,
            items=self.store.item_counts(self.job_id),
            batches=[
                (r["provider_batch_id"] or "(preparing)", r["state"], r["n_requests"])
                for r in self.store.batches(self.job_id)
            ],
            elapsed=self.clock() - self._started,
            cost_usd=self.store.totals(self.job_id)["cost_usd"],
            notes=self.notes[-5:],
        )

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.snapshot())
