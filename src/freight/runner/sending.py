"""Turning documents into requests, and sending the synchronous ones: the first request of each pending document
(pre-flight split included), the sample's valid replies taken as the answers of their very requests, and the
requests routed to the synchronous API sent concurrently. A mixin of the `Runner` (runner/loop.py), as `BatchSteps`
(runner/batches.py) is for batches.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

from freight.domain import Errored, ErrorKind, ItemState, Outcome, Request, Succeeded
from freight.providers import Provider, ProviderError
from freight.runner.batches import PAGE
from freight.runner.budget import Budget
from freight.runner.build import build_request
from freight.runner.chunking import preflight_overflows
from freight.runner.crash import crashpoint
from freight.runner.ids import base_custom_id
from freight.runner.job import RunOptions
from freight.runner.sample import answered_by_sample, sampled_replies
from freight.runner.tokens import TokenCounter
from freight.store import Store


class SendSteps:
    """Creating first requests and sending synchronous ones. Relies on the `Runner` for recording outcomes, notes
    and stops."""

    store: Store
    provider: Provider
    job_id: str
    opts: RunOptions
    budget: Budget
    tokens: TokenCounter
    sync_concurrency: int
    _sampled: dict[str, tuple[str, Succeeded]] | None

    def note(self, message: str) -> None:
        raise NotImplementedError

    def _record_page(
        self, page: list[tuple[str, Outcome]], *, batch: bool, quiet_duplicate: bool = False, paid: bool = True
    ) -> None:
        raise NotImplementedError

    def _stop_on(self, what: str, exc: ProviderError, *, transient: bool = False) -> NoReturn:
        raise NotImplementedError

    def create_first_requests(self, limit: int | None = None) -> bool:
        """Build and record the first request of pending documents (all of them, or about `limit`)."""
        template = self.opts.template()
        made = 0
        while limit is None or made < limit:
            batch: list[Request] = []
            page = PAGE if limit is None else min(PAGE, limit - made)
            for item in self.store.iter_items(self.job_id, ItemState.PENDING, limit=page):
                batch.append(
                    build_request(
                        template, custom_id=base_custom_id(item.item_id), item_id=item.item_id, document=item.text
                    )
                )
            if not batch:
                break
            self.store.add_requests(self.job_id, batch, mode="sync" if self.opts.mode == "sync" else "batch")
            crashpoint("requests.created")
            made += len(batch)
            batch = self._take_sampled(batch)
            # Pre-flight: a document over the window (by the model's counter) is split before it is ever sent.
            self._record_page(preflight_overflows(self.tokens, batch), batch=self.opts.mode != "sync")
        return made > 0

    def _take_sampled(self, batch: list[Request]) -> list[Request]:
        """The sample gate's valid replies answer their requests (the very requests: same custom_id, same body), so
        what the sample paid for is not sent and paid for again; the rest of `batch` is returned to be sent. Their
        cost is the sample's, already in the job's cost."""
        if self._sampled is None:
            self._sampled = sampled_replies(self.store, self.job_id, self.opts)
        taken, rest = answered_by_sample(self._sampled, batch)
        if taken:
            self._record_page(taken, batch=False, paid=False)
            self.note(f"{len(taken)} document(s) the sample answered validly were taken as they were, not sent again")
        return rest

    def run_sync(self) -> bool:
        requests = self.store.requests_in_state(self.job_id, "created", mode="sync", limit=64)
        requests = list(self.budget.admit(requests, batch=False))
        if not requests:
            return False
        refused: ProviderError | None = None
        answered: list[tuple[str, Outcome]] = []
        with ThreadPoolExecutor(self.sync_concurrency) as pool:
            for request, outcome in zip(requests, pool.map(self._send, requests), strict=True):
                if isinstance(outcome, Errored) and outcome.kind is ErrorKind.AUTH:
                    # Not the request's fault: left unanswered, to be sent again once the key is fixed.
                    refused = ProviderError(outcome.kind, outcome.message, raw_type=outcome.raw_type)
                    continue
                answered.append((request.custom_id, outcome))
        self._record_page(answered, batch=False)
        if refused is not None:
            self._stop_on("sending requests synchronously", refused)
        return True

    def _send(self, request: Request) -> Succeeded | Errored:
        try:
            return self.provider.send(request)
        except ProviderError as exc:
            return Errored(kind=exc.kind, raw_type=exc.raw_type, message=str(exc))
