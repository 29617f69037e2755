"""Hedging: keep a deadline by moving what a late batch has not finished to the synchronous API, at the last safe time.

The idea. A job with a deadline starts in batch, for the discount. Each pass of the loop asks: if everything still
unfinished had to go through the synchronous API now, when would it be done? That takes `sync_seconds(n)` (the
requests at the provider's pace, `concurrency` at a time and within `sync_rpm`), so the latest safe moment to switch
is `deadline - sync_seconds(unfinished) - margin`. Until then the batch keeps its chance (every document it finishes
keeps the discount); at that moment the hedge cancels the job's open batches at the provider, and every request they
did not finish - a canceled batch still returns the ones it did - is sent synchronously, `concurrency` at a time.

The invariant. A custom_id is never answered both ways: the synchronous request for a document is made only after
its batch request came back unanswered (canceled, expired), from the canceled batch's own results. `duplicate=True`
(`--hedge-duplicate`) lifts that: the batches are left running and every unfinished document is also sent
synchronously; the first answer is kept and the other is still paid.

The margin (default 10 minutes) covers what the estimate leaves out: the cancel itself (a provider takes seconds to
minutes to return a canceled batch's results), polling, retries of synchronous calls that fail. The decision and
its reasons are written to the job's log (`hedge.started`), so a resumed run keeps hedging and the report can say
why each document went the way it did. The estimate of when the open batches would end (from their progress, where
the provider reports it, else from this job's earlier batches) is recorded beside it, for the report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import median
from typing import TYPE_CHECKING, Any

from freight.domain import BatchState, FreightError, ItemState
from freight.providers import Provider, ProviderError
from freight.runner.ids import base_custom_id, retry_custom_id
from freight.runner.job import RunOptions
from freight.store import Store

if TYPE_CHECKING:
    from freight.runner.loop import Runner

DEFAULT_MARGIN_S = 600.0
DEFAULT_SYNC_SECONDS = 20.0  # one synchronous request, when neither the user nor the job's history says otherwise
OPEN = (BatchState.SUBMITTED, BatchState.IN_PROGRESS, BatchState.FINALIZING)


def parse_deadline(text: str) -> datetime:
    """An ISO 8601 time (naive means UTC), or a UsageError-style FreightError saying what to give."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FreightError(f"--deadline {text!r} is not an ISO 8601 time (e.g. 2026-11-26T09:00:00Z)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class HedgePolicy:
    deadline: datetime
    margin_s: float = DEFAULT_MARGIN_S
    sync_seconds: float = DEFAULT_SYNC_SECONDS  # one request's round trip through the synchronous API
    concurrency: int = 4
    sync_rpm: float | None = None  # the provider's request-per-minute limit for this key, when known
    duplicate: bool = False

    def sync_time(self, n: int) -> float:
        """Seconds the synchronous API needs for `n` requests, `concurrency` at a time and within `sync_rpm`."""
        if n <= 0:
            return 0.0
        by_latency = math.ceil(n / max(1, self.concurrency)) * self.sync_seconds
        by_rate = n / self.sync_rpm * 60.0 if self.sync_rpm else 0.0
        return max(by_latency, by_rate)

    def hedge_at(self, n: int) -> float:
        """The latest safe moment (epoch seconds) to send `n` unfinished documents through the synchronous API."""
        return self.deadline.timestamp() - self.sync_time(n) - self.margin_s


def hedge_settings(
    margin: float | None, duplicate: bool, sync_seconds: float | None, sync_rpm: float | None
) -> dict[str, Any]:
    """The hedge's settings as stored in a job's options (`RunOptions.extra`: they change no request), so
    `freight resume` hedges the same way. Bad values raise FreightError naming the flag."""
    for flag, value in (("--hedge-margin", margin), ("--sync-seconds", sync_seconds), ("--sync-rpm", sync_rpm)):
        if value is not None and value < 0:
            raise FreightError(f"{flag} {value}: use a number of 0 or more")
    settings: dict[str, Any] = {"hedge_duplicate": duplicate}
    for key, value in (("hedge_margin", margin), ("sync_seconds", sync_seconds), ("sync_rpm", sync_rpm)):
        if value is not None:
            settings[key] = value
    return settings


def policy_for(opts: RunOptions, concurrency: int = 4) -> HedgePolicy | None:
    """The hedge of a batch job with a deadline (a sync job keeps its deadline by running synchronously)."""
    if not opts.deadline or opts.mode == "sync":
        return None
    extra = opts.extra
    return HedgePolicy(
        deadline=parse_deadline(opts.deadline),
        margin_s=float(extra.get("hedge_margin", DEFAULT_MARGIN_S)),
        sync_seconds=float(extra.get("sync_seconds", DEFAULT_SYNC_SECONDS)),
        concurrency=concurrency,
        sync_rpm=extra.get("sync_rpm") or None,
        duplicate=bool(extra.get("hedge_duplicate", False)),
    )


class Hedger:
    """Asked once per pass of the runner's loop (`Runner.step`), before anything is packed into a batch."""

    def __init__(
        self, store: Store, provider: Provider, job_id: str, policy: HedgePolicy, now: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.provider = provider
        self.job_id = job_id
        self.policy = policy
        self.now = now
        self._hedged = bool(store.events(job_id, kind="hedge.started"))
        self._canceled: set[str] = set()  # provider batch ids this run asked to cancel

    @property
    def hedged(self) -> bool:
        return self._hedged

    def unfinished(self) -> int:
        counts = self.store.item_counts(self.job_id)
        return counts.get(ItemState.PENDING.value, 0) + counts.get(ItemState.IN_FLIGHT.value, 0)

    def due_in(self) -> float | None:
        """Seconds until the hedge point, for the loop's sleep: it must wake in time. None once hedged."""
        if self._hedged:
            return None
        return max(0.0, self.policy.hedge_at(self.unfinished()) - self.now())

    def step(self, runner: Runner) -> bool:
        if self._hedged:
            # What the canceled batches returned unanswered comes back as retries: they go synchronously too. A batch
            # submitted after the hedge (one that was `preparing`, found again at the provider) is canceled too.
            moved = self.store.requests_to_sync(self.job_id, "hedged: the deadline is kept synchronously") > 0
            if not self.policy.duplicate:
                moved |= self._cancel_open(runner)
            return moved
        left = self.unfinished()
        if left == 0:
            return False
        now = self.now()
        if now < self.policy.hedge_at(left):
            return False
        self._hedge(runner, left, now)
        return True

    def estimate_end(self, now: float) -> tuple[float | None, str]:
        """When the open batches would end: (epoch seconds or None, how it was estimated)."""
        rows = self.store.batches(self.job_id)
        open_rows = [r for r in rows if BatchState(r["state"]) in OPEN]
        if not open_rows:
            return None, "no batch open"
        ends: list[float] = []
        history = [
            (r["ended_at"] - r["submitted_at"]).total_seconds()
            for r in rows
            if r["ended_at"] is not None and r["submitted_at"] is not None and r["state"] == BatchState.ENDED.value
        ]
        how = "progress"
        for row in open_rows:
            counts = row["counts"] or {}
            done = sum(int(counts.get(k, 0)) for k in ("succeeded", "errored", "canceled", "expired"))
            started = row["submitted_at"].timestamp() if row["submitted_at"] else now
            if 0 < done < row["n_requests"] and now > started:
                ends.append(now + (row["n_requests"] - done) * (now - started) / done)
            elif history:
                ends.append(started + median(history))
                how = "this job's earlier batches"
            else:
                return None, "the provider reports no progress and the job has no earlier batch"
        return max(ends), how

    def _hedge(self, runner: Runner, left: int, now: float) -> None:
        policy = self.policy
        end, how = self.estimate_end(now)
        open_ids = [r["provider_batch_id"] for r in self.store.batches(self.job_id, OPEN) if r["provider_batch_id"]]
        estimate = (
            f"the open batches were estimated (from {how}) to end at {_clock(end)}"
            if end is not None
            else f"no estimate of the open batches' end ({how})"
        )
        why = (
            f"{left} document(s) unfinished at {_clock(now)}; the deadline {_clock(policy.deadline.timestamp())} "
            f"leaves {policy.deadline.timestamp() - now:.0f} s, the synchronous API needs about "
            f"{policy.sync_time(left):.0f} s for them plus a {policy.margin_s:.0f} s margin; {estimate}"
        )
        self.store.log(
            self.job_id,
            "hedge.started",
            at=now,
            deadline=policy.deadline.timestamp(),
            unfinished=left,
            sync_s=policy.sync_time(left),
            margin_s=policy.margin_s,
            estimated_end=end,
            estimated_from=how,
            batches=open_ids,
            duplicate=policy.duplicate,
            message=why,
        )
        self._hedged = True
        self.store.requests_to_sync(self.job_id, "hedged before it was submitted")
        if policy.duplicate:
            runner.note(f"hedging: {why}; sending them synchronously too, batches left running (--hedge-duplicate)")
            self._duplicate_in_flight()
            return
        what = f"canceling {', '.join(open_ids)}" if open_ids else "no batch to cancel"
        runner.note(f"hedging: {why}; {what}, sending the rest synchronously")
        self._cancel_open(runner)

    def _cancel_open(self, runner: Runner) -> bool:
        """Ask the provider to cancel each open batch of the job, once per batch in this run."""
        moved = False
        for row in self.store.batches(self.job_id, OPEN):
            bid = row["provider_batch_id"]
            if bid is None or bid in self._canceled:
                continue
            self._canceled.add(bid)
            moved = True
            try:
                runner._update(row, self.provider.cancel_batch(bid))
            except ProviderError as exc:
                # A batch that ended before the cancel reached it is taken in by the next poll, results and all.
                runner.note(f"hedging: canceling {bid} failed: {exc}; its next poll decides")
        return moved

    def _duplicate_in_flight(self) -> None:
        """`--hedge-duplicate`: a synchronous twin of every request still out in a batch (paid twice)."""
        twins = []
        for row in self.store.requests_where(self.job_id, state="submitted"):
            request = row["request"]
            n = self.store.count_item_requests(self.job_id, row["item_id"])
            twins.append(
                request.model_copy(
                    update={
                        "custom_id": retry_custom_id(base_custom_id(row["item_id"]), n),
                        "parent_custom_id": request.custom_id,
                        "fix": "hedge_duplicate",
                    }
                )
            )
        if twins:
            self.store.add_requests(self.job_id, twins, mode="sync")


def _clock(epoch: float | None) -> str:
    if epoch is None:
        return "?"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hedge_summary(store: Store, job_id: str) -> dict[str, Any] | None:
    """For the report: whether and why the job hedged, which way each document went, and the discount kept."""
    started = store.events(job_id, kind="hedge.started")
    if not started:
        return None
    paths = store.request_paths(job_id)
    event = started[0]["data"]
    by_item: dict[str, list[dict[str, Any]]] = {}
    for row in paths:
        by_item.setdefault(row["item_id"], []).append(row)
    way: dict[str, str] = {}
    why: dict[str, str] = {}
    for item_id, rows in by_item.items():
        answered = [r for r in rows if r["status"] == "succeeded"] or rows
        last = answered[0]
        way[item_id] = last["mode"]
        if last["mode"] == "batch":
            why[item_id] = "answered in its batch before the hedge (discount kept)"
        else:
            before = [r for r in rows if r["mode"] == "batch"]
            status = before[-1]["status"] if before else None
            why[item_id] = (
                f"its batch request came back {status} from the hedge's cancel: sent synchronously"
                if status
                else "not yet submitted when the job hedged: sent synchronously"
            )
    batch_rows = [r for r in paths if r["mode"] == "batch" and r["status"] == "succeeded"]
    sync_rows = [r for r in paths if r["mode"] == "sync" and r["status"] == "succeeded"]
    saved = sum(r["sync_cost_usd"] - r["cost_usd"] for r in batch_rows)
    batch_sync = sum(r["sync_cost_usd"] for r in batch_rows)
    kept: float | None = None  # unknown: nothing priced (an unpriced model, the embedded one)
    if batch_sync > 0:
        lost = saved / batch_sync * sum(r["sync_cost_usd"] for r in sync_rows)  # at the discount the batch gave
        kept = saved / (saved + lost) if saved + lost > 0 else None
    elif any(r["sync_cost_usd"] > 0 for r in sync_rows):
        kept = 0.0  # priced, and nothing was answered in batch
    docs_batch = sum(1 for w in way.values() if w == "batch")
    return {
        "at": event["at"],
        "deadline": event["deadline"],
        "reason": event["message"],
        "batches_canceled": [] if event.get("duplicate") else event["batches"],
        "documents_batch": docs_batch,
        "documents_sync": len(way) - docs_batch,
        "discount_kept": round(kept, 4) if kept is not None else None,
        "documents": {item_id: {"way": way[item_id], "why": why[item_id]} for item_id in sorted(way)},
    }


def render_hedge(summary: dict[str, Any]) -> str:
    total = summary["documents_batch"] + summary["documents_sync"]
    kept = summary["discount_kept"]
    share = f"{kept:.0%} of the batch discount kept" if kept is not None else "the discount kept: unknown (unpriced)"
    canceled = len(summary["batches_canceled"])
    return (
        f"hedged at {_clock(summary['at'])} for the deadline {_clock(summary['deadline'])} "
        f"({canceled} batch(es) canceled; why: report.json hedge.reason): {summary['documents_batch']} of {total} "
        f"documents answered in batch, {summary['documents_sync']} synchronously; {share}"
    )
