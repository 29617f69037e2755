"""Routing, pricing and cadence: pure functions over data, no network and no store.

`route` decides synchronous or batch for a workflow (and, through `workflow_from_requests`, for a job at run time);
`pricing.cost` prices a `Usage`; `project_retries` projects what a first-pass rate costs in retries; `make_plan` puts
them together for `freight plan`.
"""

from freight.plan.cadence import Cadence, submission_cadence
from freight.plan.model import Mode, Period, PlanFileError, Proposal, Workflow, WorkflowFile, load_workflows
from freight.plan.pricing import PriceTable, PricingError, UnknownModel, cost, default_prices, load_prices
from freight.plan.report import Costs, Move, Plan, ProposalReview, Verdict, WorkflowPlan, make_plan
from freight.plan.retries import RetryProjection, project_retries
from freight.plan.routing import Decision, Policy, Reason, ReasonCode, route, workflow_from_requests

__all__ = [
    "Cadence",
    "Costs",
    "Decision",
    "Mode",
    "Move",
    "Period",
    "Plan",
    "PlanFileError",
    "Policy",
    "PriceTable",
    "PricingError",
    "Proposal",
    "ProposalReview",
    "Reason",
    "ReasonCode",
    "RetryProjection",
    "UnknownModel",
    "Verdict",
    "Workflow",
    "WorkflowFile",
    "WorkflowPlan",
    "cost",
    "default_prices",
    "load_prices",
    "load_workflows",
    "make_plan",
    "project_retries",
    "route",
    "submission_cadence",
    "workflow_from_requests",
]
