"""When to submit a batch workflow so that its SLA still holds.

A batch may take the whole window, so what the SLA leaves after the window (the buffer) is all the time a piece of
work may wait before it goes out. Submitting every `buffer` hours keeps every item inside the SLA; submitting every
`buffer - margin` keeps the safety margin too. A 30 h SLA leaves 6 h: submit every 4-6 h.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from freight.plan.routing import Decision, hours


@dataclass(frozen=True)
class Cadence:
    buffer: timedelta
    every_min: timedelta
    every_max: timedelta
    ready_at: datetime
    latest_submission: datetime  # for work ready at `ready_at`
    due: datetime

    def every(self) -> str:
        if self.every_min <= timedelta(0):
            return f"every {hours(self.every_max)} at most"
        if self.every_min == self.every_max:
            return f"every {hours(self.every_max)}"
        low, high = hours(self.every_min).removesuffix(" h"), hours(self.every_max)
        # "4-6 h" when both are in hours; otherwise each keeps its own unit.
        return f"every {low}-{high}" if low != hours(self.every_min) else f"every {low} to {high}"


def submission_cadence(decision: Decision, margin: timedelta, now: datetime) -> Cadence | None:
    """The cadence and latest submission time for a batch decision with an SLA or deadline; None otherwise."""
    if not decision.is_batch or decision.time_allowed is None:
        return None
    buffer = decision.time_allowed - decision.batch_window
    ready = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    due = ready + decision.time_allowed
    return Cadence(
        buffer=buffer,
        every_min=max(buffer - margin, timedelta(0)),
        every_max=buffer,
        ready_at=ready,
        latest_submission=due - decision.batch_window,
        due=due,
    )
