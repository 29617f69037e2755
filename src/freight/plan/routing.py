"""Synchronous or batch: the decision for one workflow, with every reason that led to it.

`route` is what `freight plan` prints and what `freight run --mode auto` calls on a job before submitting anything,
so it is a pure function of the workflow, the policy and the instant it is asked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from freight.domain import Request
from freight.plan.model import Mode, Workflow
from freight.plan.pricing import PriceTable, default_prices

DEFAULT_WINDOW = timedelta(hours=24)


class ReasonCode(StrEnum):
    BLOCKING = "blocking"
    TOOL_CALLING = "tool_calling"
    SLA_TOO_SHORT = "sla_too_short"
    ITERATIVE = "iterative"
    TOO_SMALL = "too_small"
    NOBODY_WAITS = "nobody_waits"


@dataclass(frozen=True)
class Policy:
    # Below this many requests per run, the batch's fixed costs (packing, polling, a day's latency) outweigh the saving.
    min_batch_requests: int = 100
    # An SLA must exceed the batch window by at least this much: slack for submission, polling and a late batch.
    safety_margin: timedelta = timedelta(hours=2)
    # None: the window of the model's provider in the price table (24 h for a model the table does not list).
    batch_window: timedelta | None = None


@dataclass(frozen=True)
class Reason:
    code: ReasonCode
    text: str


@dataclass(frozen=True)
class Decision:
    workflow: str
    mode: Mode
    reasons: tuple[Reason, ...]
    batch_window: timedelta
    # The time the result may take, from the SLA or the deadline, whichever is tighter; None when nobody set one.
    time_allowed: timedelta | None = None
    codes: frozenset[ReasonCode] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", frozenset(r.code for r in self.reasons))

    @property
    def is_batch(self) -> bool:
        return self.mode is Mode.BATCH

    def explain(self) -> str:
        return f"{self.workflow}: {self.mode.value}, because " + "; ".join(r.text for r in self.reasons)


def hours(delta: timedelta) -> str:
    """`6 h`, `1.5 h`, `45 min`: durations as a person reads them."""
    total = delta.total_seconds() / 3600
    if abs(total) < 1:
        return f"{round(total * 60)} min"
    return f"{total:g} h" if total == round(total, 2) else f"{total:.1f} h"


def _aware(moment: datetime) -> datetime:
    # A naive time in a workflows file or a job is taken as UTC rather than refused: it is what a user usually means.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _window(workflow: Workflow, policy: Policy, prices: PriceTable) -> timedelta:
    if policy.batch_window is not None:
        return policy.batch_window
    if prices.knows(workflow.model):
        return timedelta(hours=prices.batch_window_hours(workflow.model))
    return DEFAULT_WINDOW


def _discount(workflow: Workflow, prices: PriceTable) -> float:
    return prices.lookup(workflow.model)[1].batch_discount if prices.knows(workflow.model) else 0.5


def time_allowed(workflow: Workflow, now: datetime | None) -> timedelta | None:
    """How long the result may take from `now`: the SLA, or the time left to the deadline, whichever is shorter."""
    allowed = [workflow.sla] if workflow.sla is not None else []
    if workflow.deadline is not None:
        allowed.append(_aware(workflow.deadline) - _aware(now or datetime.now(UTC)))
    return min(allowed) if allowed else None


def _allowed_label(workflow: Workflow, allowed: timedelta) -> str:
    if workflow.sla is not None and allowed >= workflow.sla:
        return f"its {hours(allowed)} SLA"
    return f"the {hours(allowed)} left before its deadline"


def route(
    workflow: Workflow,
    policy: Policy | None = None,
    *,
    prices: PriceTable | None = None,
    now: datetime | None = None,
) -> Decision:
    """Synchronous when anything forbids a batch (listing every such reason), batch otherwise.

    `now` matters only for a workflow with a deadline; pass it (tests, the runner's clock) rather than letting the
    system clock decide.
    """
    policy = policy or Policy()
    prices = prices or default_prices()
    window = _window(workflow, policy, prices)
    allowed = time_allowed(workflow, now)
    sync: list[Reason] = []
    if workflow.blocking:
        sync.append(Reason(ReasonCode.BLOCKING, "someone is blocked on the result: synchronous whatever the saving"))
    if workflow.tool_calling:
        sync.append(
            Reason(ReasonCode.TOOL_CALLING, "it needs multi-turn tool calling, and a batch request is single-turn")
        )
    if allowed is not None and allowed < window + policy.safety_margin:
        sync.append(
            Reason(
                ReasonCode.SLA_TOO_SHORT,
                f"{_allowed_label(workflow, allowed)} is shorter than the {hours(window)} batch window "
                f"plus the {hours(policy.safety_margin)} safety margin",
            )
        )
    if workflow.iterative:
        sync.append(
            Reason(ReasonCode.ITERATIVE, "it is iterative: each result decides the next request, so none can wait")
        )
    if workflow.requests_per_run < policy.min_batch_requests:
        sync.append(
            Reason(
                ReasonCode.TOO_SMALL,
                f"{workflow.requests_per_run} requests per run is too few for the batch overhead to pay "
                f"(the threshold is {policy.min_batch_requests})",
            )
        )
    if sync:
        return Decision(workflow.name, Mode.SYNC, tuple(sync), window, allowed)
    saving = round((1 - _discount(workflow, prices)) * 100)
    slack = (
        f"{_allowed_label(workflow, allowed)} leaves {hours(allowed - window)} after the {hours(window)} batch window"
        if allowed is not None
        else f"it has no SLA to outrun the {hours(window)} batch window"
    )
    why = (
        f"nobody waits on it, it is single-turn and not iterative, {slack}, and {workflow.requests_per_run} requests "
        f"per run are enough to pay the batch overhead; the batch price saves {saving} %"
    )
    return Decision(workflow.name, Mode.BATCH, (Reason(ReasonCode.NOBODY_WAITS, why),), window, allowed)


def workflow_from_requests(
    requests: Sequence[Request],
    *,
    name: str,
    deadline: datetime | None = None,
    blocking: bool = False,
) -> Workflow:
    """The workflow a job's requests make, for routing at run time (token averages are left out: routing needs none)."""
    if not requests:
        raise ValueError("a job with no requests has nothing to route")
    return Workflow(
        name=name,
        model=requests[0].model,
        blocking=blocking,
        tool_calling=any(r.needs_sync() is not None for r in requests),
        requests_per_run=len(requests),
        deadline=deadline,
    )
