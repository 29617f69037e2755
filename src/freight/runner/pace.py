"""Batches sized to the engine that answers them, for a run on the embedded local model.

A provider answers a batch of 5,000 in minutes; the embedded model answers a few documents a second at best, so one
batch of a whole folder would end - and give its first result - only when the last document is done, and a crash
would leave the whole folder's work in one place. Paced, the run keeps at most `max_active` batches open (one being
answered, one queued so the engine never waits for the next poll) and sizes each new batch from the pace the engine
kept on the batches that already ended, so each takes about `target_seconds`: results and progress flow batch by
batch, and the rate on the progress line is the model's own.

The pace of a batch is measured from the store's own record of it: its requests over the time it was being answered,
which starts when it was submitted or when the batch before it ended, whichever is later (the engine answers batches
in the order they arrive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Pace:
    target_seconds: float = 60.0  # each batch ends within about a minute
    max_active: int = 2  # one answered, one queued
    first_size: int = 8  # before anything has ended: small, so the first results and the first measure come soon
    min_size: int = 4
    recent: int = 3  # batches the pace is averaged over

    def next_size(self, history: Sequence[dict[str, Any]], ceiling: int | None) -> int:
        """The size of the next batch from the job's batches so far (the store's rows, any order)."""
        rate = measured_rate(history, self.recent)
        size = self.first_size if rate is None else round(rate * self.target_seconds)
        size = max(self.min_size, size)
        return min(size, ceiling) if ceiling else size


def measured_rate(history: Sequence[dict[str, Any]], recent: int = 3) -> float | None:
    """Requests answered per second over the last `recent` ended batches, or None before one has ended."""
    ended = sorted(
        (b for b in history if b.get("ended_at") and b.get("submitted_at") and b.get("n_requests")),
        key=lambda b: _ts(b["ended_at"]),
    )
    spans: list[tuple[int, float]] = []
    previous_end: float | None = None
    for b in ended:
        start, end = _ts(b["submitted_at"]), _ts(b["ended_at"])
        if previous_end is not None:
            start = max(start, previous_end)
        previous_end = end
        if end > start:
            spans.append((int(b["n_requests"]), end - start))
    if not spans:
        return None
    spans = spans[-recent:]
    return sum(n for n, _ in spans) / sum(s for _, s in spans)


def _ts(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)
