"""The cost cap (`--max-cost USD`): never submit work whose worst case would take the job over it.

A request's worst case is its input tokens, by the model's own counter (`Provider.count_tokens`), plus max_tokens of
output, at the price of the path it takes (batch or sync). Before each request is submitted, the job's spend so far
(every outcome's cost, summed by the store, plus its sample's) plus the worst case of everything still in flight plus
this request's must stay within the cap; the first request that does not fit stops submission for the pass. Retries
are requests like any other, so they count. When batches in flight end, their real cost (below their worst case)
frees room and submission resumes; when nothing is in flight and the next request still does not fit, the job stops
(`stopped`, a `job.needs_attention` note in its log) and `freight resume JOB --max-cost N` raises the cap.

The cap lives in the job's log (`cost.cap` events, the newest wins), not in its identity: raising it resumes the same
job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from freight.domain import JobStopped, Request, Usage, UsageError
from freight.plan.pricing import Pricer
from freight.runner.job import RunOptions
from freight.runner.report import sample_spend
from freight.runner.tokens import TokenCounter
from freight.store import Store

CAP_EVENT = "cost.cap"


class CostCapReached(JobStopped):
    """The cap stopped the job: nothing is wrong, the user decides whether to spend more (exit 1, not 4)."""

    exit_code = 1


def set_cap(store: Store, job_id: str, cap: float | None, cancel: bool = False) -> None:
    """Record the job's cap (None: no cap); the newest record is the one in force."""
    store.log(job_id, CAP_EVENT, max_cost=cap, cancel=cancel)


def current_cap(store: Store, job_id: str, opts: RunOptions) -> tuple[float | None, bool]:
    """(cap in US dollars or None, whether reaching it cancels in-flight batches)."""
    events = store.events(job_id, kind=CAP_EVENT)
    if events:
        data = events[-1]["data"]
        return (None if data.get("max_cost") is None else float(data["max_cost"])), bool(data.get("cancel"))
    return opts.max_cost, opts.max_cost_cancel


class Budget:
    def __init__(self, store: Store, tokens: TokenCounter, job_id: str, opts: RunOptions) -> None:
        self.store = store
        self.tokens = tokens
        self.job_id = job_id
        self.cap, self.cancel = current_cap(store, job_id, opts)
        self.pricer: Pricer = opts.pricer()
        self._worst: dict[str, float] = {}  # custom_id -> worst-case US dollars, counted once per run
        self.blocked: Request | None = None  # the first request the cap kept back in the last pass
        # Set once the cap canceled the batches in flight (--max-cost-cancel): nothing more is submitted this run,
        # not even the canceled requests' resubmissions.
        self.closed = False

    @property
    def active(self) -> bool:
        return self.cap is not None

    def check_priced(self, models: Iterable[str]) -> None:
        if self.active and (missing := self.pricer.unpriced(models)):
            raise UsageError(
                f"--max-cost needs a price for every model, and {', '.join(missing)} has none: give it one "
                "(--prices FILE or --price-as MODEL)"
            )

    def spent(self) -> float:
        return float(self.store.totals(self.job_id)["cost_usd"]) + sample_spend(self.store, self.job_id)

    def worst(self, request: Request, batch: bool) -> float:
        key = f"{request.custom_id}:{batch}"
        if key not in self._worst:
            counted = self.tokens.count(request)
            # An estimate (no counter) may fall short: a fifth more keeps the cap a ceiling rather than a guess.
            tokens = math.ceil(counted.input_tokens * 1.2) if counted.estimated else counted.input_tokens
            usage = Usage(input_tokens=tokens, output_tokens=request.max_tokens)
            self._worst[key] = self.pricer.cost(request.model, usage, batch) or 0.0
        return self._worst[key]

    def in_flight(self) -> float:
        """The worst case of everything submitted and not answered yet."""
        rows = self.store.requests_where(self.job_id, state="submitted")
        return sum(self.worst(r["request"], r["mode"] != "sync") for r in rows)

    def admit(self, requests: Iterable[Request], batch: bool = True) -> Iterator[Request]:
        """`requests` as long as each one's worst case fits under the cap; stops at the first that does not (kept in
        `blocked` until the caller's next pass clears it)."""
        if self.cap is None:
            yield from requests
            return
        if self.closed:
            self.blocked = next(iter(requests), None) or self.blocked  # an empty pass leaves the last one in place
            return
        committed: float | None = None  # read only when there is something to admit: a poll pass costs nothing
        for request in requests:
            if committed is None:
                committed = self.spent() + self.in_flight()
            cost = self.worst(request, batch)
            if committed + cost > self.cap + 1e-12:
                self.blocked = request
                return
            committed += cost
            yield request

    def summary(self) -> dict[str, Any]:
        return {"max_cost_usd": self.cap, "spent_usd": round(self.spent(), 6)}
