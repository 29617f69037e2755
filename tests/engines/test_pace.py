"""The pace of batches on the embedded engine, which decodes several requests at once (runner/pace.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from freight.runner.pace import ENGINE_SLOTS_PER_CORE, Pace, measured_rate

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _batch(n: int, submitted: float, ended: float | None) -> dict[str, object]:
    return {
        "n_requests": n,
        "submitted_at": T0 + timedelta(seconds=submitted),
        "ended_at": None if ended is None else T0 + timedelta(seconds=ended),
    }


def test_batches_answered_together_count_their_shared_time_once() -> None:
    # Two batches of 8 decoded side by side by an engine with 16 slots, both ending after about 100 s: 16 requests
    # in 100 s, not 8 in 100 s and 8 in 2 s (which the one-after-the-other reading would make of it).
    together = [_batch(8, 0, 100), _batch(8, 0, 102)]
    assert measured_rate(together) == pytest.approx(16 / 102)
    # Answered one after the other, the second's time counts from the first's end, as before.
    queued = [_batch(8, 0, 10), _batch(8, 0, 14)]
    assert measured_rate(queued) == pytest.approx(16 / 14)
    # A gap with nothing open is not counted as time spent answering.
    gap = [_batch(8, 0, 10), _batch(8, 20, 30)]
    assert measured_rate(gap) == pytest.approx(16 / 20)


def test_a_batch_after_the_first_is_never_smaller_than_what_the_engine_decodes_at_once() -> None:
    pace = Pace(target_seconds=60, min_size=2 * ENGINE_SLOTS_PER_CORE)
    slow = [_batch(8, 0, 100), _batch(8, 0, 102)]  # about 9 a minute: a 60-s batch would be 9 and leave slots idle
    assert pace.next_size(slow, ceiling=None) == 16
    assert pace.next_size(slow, ceiling=10) == 10  # --batch-size stays the ceiling
    assert pace.next_size([], ceiling=None) == pace.first_size == 8  # the first two fill the 16 slots together


def test_what_a_batch_would_leave_behind_goes_with_it_when_the_engine_could_take_it_at_once() -> None:
    pace = Pace(target_seconds=60, min_size=16)
    # 24 waiting, a batch of 8: the 16 left fill the engine's slots on their own, so they wait for the next batch.
    assert pace.with_rest(8, waiting=24, ceiling=None) == 8
    # 17 waiting: the 9 left would run alone at the end with 7 slots idle; they go now, with this batch.
    assert pace.with_rest(8, waiting=17, ceiling=None) == 17
    assert pace.with_rest(8, waiting=17, ceiling=12) == 12  # --batch-size stays the ceiling
    assert pace.with_rest(40, waiting=3, ceiling=None) == 40  # fewer waiting than the size: the size stands
