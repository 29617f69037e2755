"""The batch side of the loop: pack and submit, find again a batch whose submission was never acknowledged, poll,
and ingest ended batches. `Runner` (runner/loop.py) mixes it in; the invariants are the ones stated there.

Adoption never guesses: when a run died between submitting a batch and recording the provider's answer, the batch is
looked for at the provider; when the provider cannot be asked, or more than one of its batches could be this one, the
job stops (`freight resume JOB --resubmit-unacknowledged` to send it again) rather than risk paying twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from freight.domain import BatchState, Errored, ErrorKind, Expired, Outcome, Request
from freight.providers import Provider, ProviderError, RequestRefused
from freight.providers.packing import pack_for
from freight.runner.budget import Budget
from freight.runner.crash import crashpoint
from freight.runner.pace import Pace
from freight.runner.steps import StepClaims, claimed
from freight.runner.stops import Strikes, unhealable
from freight.store import Store

# Results are recorded this many at a time: one transaction per page of outcomes (runner/loop.py), each commit an
# fsync (synchronous=FULL): at 500 a page the commits alone were a quarter of ingesting 10,000 results.
PAGE = 2000

ACTIVE = (
    BatchState.PREPARING,
    BatchState.SUBMITTED,
    BatchState.IN_PROGRESS,
    BatchState.FINALIZING,
    BatchState.CANCELING,
)


class BatchSteps:
    """Submitting, polling and ingesting batches. Relies on the `Runner` for recording outcomes, notes and stops."""

    store: Store
    provider: Provider
    job_id: str
    batch_size: int | None
    pace: Pace | None
    resubmit_unacknowledged: bool
    strikes: Strikes
    budget: Budget
    max_active_batches: int | None
    poll_interval: float
    clock: Callable[[], float]
    _polled_at: float | None = None
    steps: StepClaims | None  # a worker's step claims (runner/steps.py); None: every batch is this runner's

    def note(self, message: str) -> None:
        raise NotImplementedError

    def _record(self, custom_id: str, outcome: Outcome, *, batch: bool, quiet_duplicate: bool = False) -> None:
        raise NotImplementedError

    def _record_page(self, page: list[tuple[str, Outcome]], *, batch: bool, quiet_duplicate: bool = False) -> None:
        raise NotImplementedError

    def _stop(self, message: str) -> NoReturn:
        raise NotImplementedError

    def _stop_on(self, what: str, exc: ProviderError, *, transient: bool = False) -> NoReturn:
        raise NotImplementedError

    def submit_pending(self) -> bool:
        moved = False
        # A batch recorded as preparing but never confirmed: the last run stopped between recording and submitting.
        for row in self.store.batches(self.job_id, [BatchState.PREPARING]):
            if not self._adopt(row):
                self._submit(row["id"])
            moved = True
        limits = self.provider.limits
        size = self.batch_size
        batchable: Iterator[Request] = self._batchable()
        if self.pace is not None:
            history = self.store.batches(self.job_id)
            if sum(1 for b in history if BatchState(b["state"]) in ACTIVE) >= self.pace.max_active:
                return moved
            size = self.pace.next_size(history, self.batch_size)
            if history:  # not the first batch, kept small so the first results come soon
                ahead = list(itertools.islice(batchable, size + self.pace.min_size))
                size = self.pace.with_rest(size, len(ahead), self.batch_size)
                batchable = iter(ahead)
        if size:
            limits = limits.model_copy(update={"max_requests_per_batch": min(size, limits.max_requests_per_batch)})
        try:
            for requests in pack_for(self.provider, self.budget.admit(batchable), limits):
                local = self._create_batch([r.custom_id for r in requests])
                if local is None:  # the provider's shared limit of open batches is reached: wait for one to end
                    break
                crashpoint("submit.before")
                self._submit(local, requests)
                moved = True
                if self.pace is not None:
                    break  # paced: one batch a pass, the next sized by what this one shows
        except RequestRefused as exc:
            self._refuse(exc)
            moved = True
        return moved

    def _create_batch(self, custom_ids: list[str]) -> int | None:
        if self.max_active_batches is None:
            return self.store.create_batch(self.job_id, self.provider.name, custom_ids)
        return self.store.create_batch_within(self.job_id, self.provider.name, custom_ids, self.max_active_batches)

    def _batchable(self) -> Iterator[Request]:
        """The pending batch requests, less those no batch can carry: each of those is routed, with its reason,
        through the synchronous API (`run_sync`), so a tool-using line never holds a batch back."""
        for request in self.store.iter_pending_requests(self.job_id):
            reason = request.needs_sync()
            if reason is None:
                yield request
                continue
            self.store.route_to_sync(self.job_id, request.custom_id, reason)
            self.note(f"request {request.custom_id} goes through the synchronous API: {reason}")

    def _adopt(self, row: dict[str, Any]) -> bool:
        """Find a batch the provider accepted but this store never heard back about (the run died in between).

        Never a guess: when the provider cannot be asked, or more than one of its batches could be this one, the job
        stops and says how to go on, rather than submit again and maybe pay twice."""
        ref = self._ref(row["id"])
        try:
            candidates = self.provider.find_batches(ref, row["n_requests"], row["created_at"])
        except ProviderError as exc:
            if self.resubmit_unacknowledged:
                self.note(f"could not look for an earlier submission of {ref} ({exc}); submitting it again as asked")
                return False
            if unhealable(exc) or self.strikes.fail(f"adopt:{ref}"):
                self._unacknowledged(row, f"looking it up at the provider failed: {exc}")
            self.note(f"could not look for an earlier submission of {ref} for now: {exc}")
            return True  # nothing submitted: ask again on the next pass
        unknown = [b for b in candidates if not self.store.knows_batch(b.provider_batch_id)]
        if not unknown:  # the provider never got it: submitting is safe
            return False
        if len(unknown) > 1:
            if self.resubmit_unacknowledged:
                self.note(f"{len(unknown)} batches at the provider could be {ref}; submitting it again as asked")
                return False
            ids = ", ".join(b.provider_batch_id for b in unknown)
            self._unacknowledged(row, f"{len(unknown)} batches at the provider could be it ({ids})")
        found = unknown[0]
        self.store.mark_submitted(row["id"], found)
        self.store.log(self.job_id, "batch.adopted", batch=row["id"], provider_batch_id=found.provider_batch_id)
        return True

    def _unacknowledged(self, row: dict[str, Any], why: str) -> NoReturn:
        self._stop(
            f"batch {self._ref(row['id'])} ({row['n_requests']} requests) was sent by an earlier run that stopped "
            f"before the provider's answer was recorded, and {why}. Submitting it again could bill those requests "
            f"twice: check the provider's batches for it, then run `freight resume {self.job_id} "
            f"--resubmit-unacknowledged` to submit it again (or `freight cancel {self.job_id}`)"
        )

    def _ref(self, local: int) -> str:
        return f"{self.job_id}-b{local}"

    def _submit(self, local: int, requests: list[Request] | None = None) -> None:
        if requests is None:
            requests = [r["request"] for r in self.store.requests_where(self.job_id, batch_id=local)]
        try:
            batch = self.provider.submit_batch(requests, ref=self._ref(local))
        except RequestRefused as exc:
            # The batch never ran: the others are released to be packed again, the refused one fails with why.
            self.store.fail_unsubmitted_batch(local, str(exc))
            self._refuse(exc)
            return
        except ProviderError as exc:
            if exc.kind.retryable:
                if self.strikes.fail("submit"):
                    self._stop_on(f"submitting a batch of {len(requests)} requests", exc, transient=True)
                self.note(f"submitting a batch failed for now ({exc}); will try again")
                return
            self.store.fail_unsubmitted_batch(local, str(exc))
            if unhealable(exc):  # its requests wait, released, for a resume once the cause is fixed
                self._stop_on(f"submitting a batch of {len(requests)} requests", exc)
            failed = Errored(kind=exc.kind, raw_type=exc.raw_type, message=str(exc))
            self._record_page([(r.custom_id, failed) for r in requests], batch=True)
            return
        crashpoint("submit.after")
        self.strikes.ok("submit")
        self.store.mark_submitted(local, batch)

    def _refuse(self, exc: RequestRefused) -> None:
        """A request no batch can carry: it ends errored (invalid_request) with the reason, and its item fails."""
        self._record(
            exc.custom_id, Errored(kind=ErrorKind.INVALID_REQUEST, raw_type="refused", message=exc.reason), batch=True
        )
        self.note(str(exc))

    def _poll_due(self) -> bool:
        return self._polled_at is None or self.clock() - self._polled_at >= self.poll_interval

    def poll_batches(self) -> bool:
        self._polled_at = self.clock()
        moved = False
        for row in claimed(self.steps, self.store.batches(self.job_id, ACTIVE[1:]), "poll"):
            pbid = row["provider_batch_id"]
            try:
                batch = self.provider.get_batch(pbid)
            except ProviderError as exc:
                if unhealable(exc):
                    self._stop_on(f"polling batch {pbid}", exc)
                if self.strikes.fail(f"poll:{pbid}"):
                    self._stop_on(f"polling batch {pbid}", exc, transient=True)
                self.note(f"polling {pbid} failed for now: {exc}")
                continue
            self.strikes.ok(f"poll:{pbid}")
            if batch.state.value != row["state"] or batch.counts.model_dump() != row["counts"]:
                self._update(row, batch)
                crashpoint("poll.updated")
                moved = True
        for row in claimed(
            self.steps,
            self.store.batches(
                self.job_id, [BatchState.ENDED, BatchState.CANCELED, BatchState.EXPIRED, BatchState.FAILED]
            ),
            "ingest",
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
            page: list[tuple[str, Outcome]] = []
            try:
                for result in self.provider.iter_results(pbid):
                    if result.custom_id in seen:
                        self.note(f"batch {pbid}: custom_id {result.custom_id} arrived twice; the first was kept")
                        continue
                    seen.add(result.custom_id)
                    page.append((result.custom_id, result.outcome))
                    if len(page) >= PAGE:
                        self._record_page(page, batch=True, quiet_duplicate=True)
                        page = []
                self._record_page(page, batch=True, quiet_duplicate=True)
            except ProviderError as exc:
                # What was read before the stream dropped is recorded; the rest is read again on the next pass.
                self._record_page(page, batch=True, quiet_duplicate=True)
                if unhealable(exc):
                    self._stop_on(f"reading the results of batch {pbid}", exc)
                if self.strikes.fail(f"results:{pbid}"):
                    self._stop_on(f"reading the results of batch {pbid}", exc, transient=True)
                self.note(f"reading the results of {pbid} failed ({exc}); will read them again")
                return bool(seen)
            self.strikes.ok(f"results:{pbid}")
        # Whatever the provider never answered still gets its one outcome, and is retried: nothing is lost. A batch
        # the provider failed as a whole (OpenAI: validation, an enqueued-token limit) says so in the outcome.
        unanswered: Outcome = Expired()
        if row["state"] == BatchState.FAILED.value:
            unanswered = Errored(
                kind=ErrorKind.UNKNOWN, raw_type="batch_failed", message=f"the provider failed batch {pbid} as a whole"
            )
        left = [r["custom_id"] for r in self.store.requests_where(self.job_id, batch_id=local, state="submitted")]
        for start in range(0, len(left), PAGE):
            self._record_page([(cid, unanswered) for cid in left[start : start + PAGE]], batch=True)
        crashpoint("ingest.before_mark")
        self.store.mark_ingested(local)
        return True

    def _update(self, row: dict[str, Any], batch: Any) -> None:
        if not self.store.update_batch(row["id"], batch):
            self.note(
                f"batch {row['provider_batch_id']} went from {row['state']} to {batch.state.value}, a sequence "
                "freight did not expect; recorded as the provider reported it"
            )
