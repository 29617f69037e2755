"""A document's lineage: every request it took (first try, retries, chunks and their retries) as a tree, each with
the fix that made it, what came back, why it was not taken, and what it cost.

Read from the store in two queries (the item; its requests joined to their outcomes); a document has a handful of
requests, so this is the one page that may read whole payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError

from freight.domain import Outcome, StopReason, Succeeded
from freight.runner.validate import check
from freight.store.schema import batches, items, outcomes, requests
from freight.ui.queries import aware

_OUTCOME = TypeAdapter[Outcome](Outcome)


@dataclass
class Step:
    custom_id: str
    attempt: int
    fix: str | None
    parent: str | None
    part: int | None
    parts: int | None
    chunk_group: str | None
    mode: str
    state: str
    batch: str | None
    request: dict[str, Any]
    outcome: dict[str, Any] | None
    status: str | None
    problem: str | None  # the error, or why a reply that came back was not taken
    cost_usd: float | None
    created_at: Any
    children: list[Step] = field(default_factory=list)

    @property
    def label(self) -> str:
        what = self.fix or "first request"
        if self.part is not None:
            what += f" · part {self.part + 1} of {self.parts}"
        return what


def _problem(outcome: Outcome | None, schema: dict[str, Any] | None, taken: bool) -> str | None:
    if outcome is None:
        return None
    if isinstance(outcome, Succeeded):
        if taken:
            return None
        checked = check(outcome, schema)
        if checked.error:
            return checked.error
        if outcome.stop_reason is StopReason.MAX_TOKENS:
            return "the reply was cut off at max_tokens"
        return None
    message = getattr(outcome, "message", "") or ""
    kind = getattr(outcome, "kind", None) or outcome.status
    return f"{kind}: {message}" if message else str(kind)


def lineage(conn: sa.Connection, job_id: str, item_id: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The item and its requests as a forest (roots: requests with no parent), or None when there is no such item."""
    item = conn.execute(
        sa.select(items).where(items.c.job_id == job_id, items.c.item_id == item_id)
    ).mappings().first()  # fmt: skip
    if item is None:
        return None
    rows = (
        conn.execute(
            sa.select(
                requests,
                outcomes.c.payload.label("outcome"),
                outcomes.c.status.label("status"),
                outcomes.c.cost_usd,
                batches.c.provider_batch_id,
            )  # fmt: skip
            .outerjoin(
                outcomes, sa.and_(outcomes.c.job_id == requests.c.job_id, outcomes.c.custom_id == requests.c.custom_id)
            )  # fmt: skip
            .outerjoin(batches, batches.c.id == requests.c.batch_id)
            .where(requests.c.job_id == job_id, requests.c.item_id == item_id)
            .order_by(requests.c.created_at, requests.c.custom_id)
        )
        .mappings()
        .all()
    )
    parents = {r["parent_custom_id"] for r in rows if r["parent_custom_id"]}
    steps: dict[str, Step] = {}
    for r in rows:
        outcome = None
        if r["outcome"] is not None:
            try:
                outcome = _OUTCOME.validate_python(r["outcome"])
            except ValidationError:
                outcome = None
        # A reply that led to no further request was taken (or the document gave up on it: then its error shows).
        taken = r["custom_id"] not in parents and item["state"] == "succeeded"
        steps[r["custom_id"]] = Step(
            custom_id=r["custom_id"],
            attempt=r["attempt"],
            fix=r["fix"],
            parent=r["parent_custom_id"],
            part=r["part"],
            parts=r["parts"],
            chunk_group=r["chunk_group"],
            mode=r["mode"],
            state=r["state"],
            batch=r["provider_batch_id"],
            request=r["payload"],
            outcome=r["outcome"],
            status=r["status"],
            problem=_problem(outcome, schema, taken),
            cost_usd=None if r["cost_usd"] is None else float(r["cost_usd"]),
            created_at=aware(r["created_at"]),
        )
    roots: list[Step] = []
    for s in steps.values():
        parent = steps.get(s.parent) if s.parent else None
        (parent.children if parent else roots).append(s)
    output = item["output"]
    return {
        "item": dict(item),
        "output": output.get("value") if isinstance(output, dict) else output,
        "meta": output.get("meta", {}) if isinstance(output, dict) else {},
        "roots": roots,
        "steps": list(steps.values()),
        "cost_usd": round(sum(s.cost_usd or 0.0 for s in steps.values()), 6),
    }
