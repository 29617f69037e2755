"""The whole plan for a workflows file: each workflow's decision, costs, cadence and retries, and a proposal's review.

State only: `freight plan` renders a `Plan` as a table or as JSON, and nothing here knows which.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from freight.domain import Usage
from freight.plan.cadence import Cadence, submission_cadence
from freight.plan.model import Mode, Settings, Workflow, WorkflowFile
from freight.plan.pricing import PriceTable
from freight.plan.retries import RetryProjection, project_retries
from freight.plan.routing import Decision, Policy, route

T = TypeVar("T")


@dataclass(frozen=True)
class Costs:
    """US dollars, both ways."""

    sync_per_run: float
    batch_per_run: float
    runs_per_month: float

    @property
    def sync_per_month(self) -> float:
        return self.sync_per_run * self.runs_per_month

    @property
    def batch_per_month(self) -> float:
        return self.batch_per_run * self.runs_per_month

    @property
    def saving_per_run(self) -> float:
        return self.sync_per_run - self.batch_per_run

    @property
    def saving_per_month(self) -> float:
        return self.sync_per_month - self.batch_per_month


def workflow_costs(workflow: Workflow, prices: PriceTable) -> Costs:
    n = workflow.requests_per_run
    usage = Usage(
        input_tokens=n * workflow.avg_input_tokens,
        output_tokens=n * workflow.avg_output_tokens,
        cache_write_tokens=n * workflow.avg_cache_write_tokens,
        cache_read_tokens=n * workflow.avg_cache_read_tokens,
    )
    return Costs(
        sync_per_run=prices.cost(workflow.model, usage, batch=False),
        batch_per_run=prices.cost(workflow.model, usage, batch=True),
        runs_per_month=workflow.runs_per_month,
    )


@dataclass(frozen=True)
class WorkflowPlan:
    workflow: Workflow
    decision: Decision
    costs: Costs
    cadence: Cadence | None
    retries: RetryProjection | None  # per run, at the chosen mode's price

    @property
    def chosen_per_month(self) -> float:
        return self.costs.batch_per_month if self.decision.is_batch else self.costs.sync_per_month


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    ALREADY_BATCH = "already batch"


@dataclass(frozen=True)
class Move:
    workflow: str
    verdict: Verdict
    why: tuple[str, ...]
    saving_per_month: float  # what this move saves if it is made (0 when refused or already batch)


@dataclass(frozen=True)
class ProposalReview:
    title: str
    moves: tuple[Move, ...]
    claimed_saving_per_month: float  # if every proposed move were made

    @property
    def accepted_saving_per_month(self) -> float:
        return sum(m.saving_per_month for m in self.moves)


@dataclass(frozen=True)
class Plan:
    workflows: tuple[WorkflowPlan, ...]
    proposal: ProposalReview | None
    policy: Policy
    prices: PriceTable
    now: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "prices": {"as_of": self.prices.as_of, "source": self.prices.source, "origin": self.prices.origin},
            "policy": {
                "min_batch_requests": self.policy.min_batch_requests,
                "safety_margin_hours": _h(self.policy.safety_margin),
            },
            "workflows": [_workflow_json(p) for p in self.workflows],
            "proposal": _proposal_json(self.proposal) if self.proposal else None,
        }


def policy_for(settings: Settings, *, min_batch_requests: int | None, safety_margin: timedelta | None) -> Policy:
    """Command-line values win over the file's `settings:`, which win over the defaults."""
    default = Policy()
    return Policy(
        min_batch_requests=_first(min_batch_requests, settings.min_batch_requests, default.min_batch_requests),
        safety_margin=_first(safety_margin, settings.safety_margin, default.safety_margin),
    )


def _first(*values: T | None) -> T:
    for v in values:
        if v is not None:
            return v
    raise ValueError("no value")


def plan_workflow(workflow: Workflow, policy: Policy, prices: PriceTable, now: datetime) -> WorkflowPlan:
    decision = route(workflow, policy, prices=prices, now=now)
    costs = workflow_costs(workflow, prices)
    retries = None
    if workflow.first_pass_rate is not None:
        per_run = costs.batch_per_run if decision.is_batch else costs.sync_per_run
        per_request = per_run / workflow.requests_per_run if workflow.requests_per_run else 0.0
        retries = project_retries(workflow.requests_per_run, workflow.first_pass_rate, per_request)
    return WorkflowPlan(workflow, decision, costs, submission_cadence(decision, policy.safety_margin, now), retries)


def review_proposal(title: str, names: list[str], plans: tuple[WorkflowPlan, ...]) -> ProposalReview:
    by_name = {p.workflow.name: p for p in plans}
    moves: list[Move] = []
    claimed = 0.0
    for name in names:
        p = by_name[name]
        if p.workflow.current_mode is Mode.BATCH:
            moves.append(Move(name, Verdict.ALREADY_BATCH, ("it already runs as a batch",), 0.0))
            continue
        claimed += p.costs.saving_per_month
        if p.decision.is_batch:
            why = (f"nobody waits on it: the move saves ${p.costs.saving_per_month:,.2f} a month",)
            moves.append(Move(name, Verdict.ACCEPTED, why, p.costs.saving_per_month))
        else:
            moves.append(Move(name, Verdict.REFUSED, tuple(r.text for r in p.decision.reasons), 0.0))
    return ProposalReview(title, tuple(moves), claimed)


def make_plan(
    file: WorkflowFile,
    *,
    prices: PriceTable,
    now: datetime,
    min_batch_requests: int | None = None,
    safety_margin: timedelta | None = None,
    propose_all_batch: bool = False,
) -> Plan:
    """Route and price every workflow; review the file's proposal, or "move everything to batch" when asked."""
    policy = policy_for(file.settings, min_batch_requests=min_batch_requests, safety_margin=safety_margin)
    plans = tuple(plan_workflow(w, policy, prices, now) for w in file.workflows)
    review = None
    if propose_all_batch:
        review = review_proposal("move everything to batch", [w.name for w in file.workflows], plans)
    elif file.proposal is not None:
        review = review_proposal(file.proposal.title, file.proposed_moves(), plans)
    return Plan(plans, review, policy, prices, now)


def _h(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 4)


def _money(x: float) -> float:
    return round(x, 6)


def _workflow_json(p: WorkflowPlan) -> dict[str, Any]:
    w, d, c = p.workflow, p.decision, p.costs
    return {
        "name": w.name,
        "description": w.description,
        "model": w.model,
        "current_mode": w.current_mode.value,
        "decision": d.mode.value,
        "reasons": [{"code": r.code.value, "text": r.text} for r in d.reasons],
        "batch_window_hours": _h(d.batch_window),
        "cost": {
            "runs_per_month": round(c.runs_per_month, 4),
            "per_run": {
                "sync": _money(c.sync_per_run),
                "batch": _money(c.batch_per_run),
                "saving": _money(c.saving_per_run),
            },
            "per_month": {
                "sync": _money(c.sync_per_month),
                "batch": _money(c.batch_per_month),
                "saving": _money(c.saving_per_month),
            },
        },
        "cadence": None
        if p.cadence is None
        else {
            "buffer_hours": _h(p.cadence.buffer),
            "submit_every_hours": {"min": _h(p.cadence.every_min), "max": _h(p.cadence.every_max)},
            "ready_at": p.cadence.ready_at.isoformat(),
            "latest_submission": p.cadence.latest_submission.isoformat(),
            "due": p.cadence.due.isoformat(),
        },
        "retries": None
        if p.retries is None
        else {
            "first_pass_rate": p.retries.first_pass_rate,
            "retries_per_run": p.retries.retries,
            "retry_cost_per_run": _money(p.retries.retry_cost),
        },
    }


def _proposal_json(review: ProposalReview) -> dict[str, Any]:
    return {
        "title": review.title,
        "moves": [
            {
                "workflow": m.workflow,
                "verdict": m.verdict.value,
                "why": list(m.why),
                "saving_per_month": _money(m.saving_per_month),
            }
            for m in review.moves
        ],
        "claimed_saving_per_month": _money(review.claimed_saving_per_month),
        "accepted_saving_per_month": _money(review.accepted_saving_per_month),
    }
