"""Batches sized to the engine that answers them, for a run on the embedded local model.

A provider answers a batch of 5,000 in minutes; the embedded model answers a few documents a second at best, so one
batch of a whole folder would end - and give its first result - only when the last document is done, and a crash
would leave the whole folder's work in one place. Paced, the run keeps at most `max_active` batches open (one being
answered, one queued so the engine never waits for the next poll) and sizes each new batch from the pace the engine
kept on the batches that already ended, so each takes about `target_seconds`: results and progress flow batch by
batch, and the rate on the progress line is the model's own.

The local engine decodes several requests at once (8 per core, server/engines/local.py), so a batch is never smaller
than that (`min_size`): a smaller one would leave slots idle while the next batch waits for it to end.

The pace of a batch is measured from the store's own record of it: the requests of the recent batches over the time
the engine was busy with them - the union of the spans from each one's submission to its end. Batches answered one
after the other count each from the end of the one before; batches answered together count their shared time once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ENGINE_SLOTS_PER_CORE = 8  # what the local engine decodes together on each core (its DEFAULT_SLOTS)


def _engine_width() -> int:
    return ENGINE_SLOTS_PER_CORE * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Pace:
    target_seconds: float = 60.0  # each batch ends within about a minute
    max_active: int = 2  # one answered, one queued
    first_size: int = 8  # before anything has ended: small, so the first results and the first measure come soon
    min_size: int = field(default_factory=_engine_width)  # what the engine decodes at once: no slot left idle
    recent: int = 3  # batches the pace is averaged over

    def next_size(self, history: Sequence[dict[str, Any]], ceiling: int | None) -> int:
        """The size of the next batch from the job's batches so far (the store's rows, any order)."""
        rate = measured_rate(history, self.recent)
        # Before anything ended: `first_size`, the first `max_active` of them filling the engine's slots together.
        size = self.first_size if rate is None else max(self.min_size, round(rate * self.target_seconds))
        return min(size, ceiling) if ceiling else size

    def with_rest(self, size: int, waiting: int, ceiling: int | None) -> int:
        """`size`, or every one of the `waiting` requests when what this batch would leave behind is less than the
        engine decodes at once: a batch that small would run alone at the end of the job, most slots idle, after
        waiting its turn. `waiting` need not be counted beyond `size + min_size`."""
        if waiting - size >= self.min_size:
            return size
        size = max(size, waiting)
        return min(size, ceiling) if ceiling else size


def measured_rate(history: Sequence[dict[str, Any]], recent: int = 3) -> float | None:
    """Requests answered per second over the last `recent` ended batches, or None before one has ended: their
    requests over the union of their [submitted, ended] spans (the time the engine was busy with them)."""
    ended = sorted(
        (b for b in history if b.get("ended_at") and b.get("submitted_at") and b.get("n_requests")),
        key=lambda b: _ts(b["ended_at"]),
    )[-recent:]
    spans = sorted((_ts(b["submitted_at"]), _ts(b["ended_at"])) for b in ended)
    busy = 0.0
    reach: float | None = None  # the end of the busy time counted so far
    for start, end in spans:
        if reach is not None:
            start = max(start, reach)
        if end > start:
            busy += end - start
            reach = end
    if busy <= 0:
        return None
    return sum(int(b["n_requests"]) for b in ended) / busy


def _ts(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)
