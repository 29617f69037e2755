"""Issue 22: on the embedded model, batches are sized to the engine's pace and results flow while the job runs.

Run through the library with the embedded server (`engine="scripted"`, started by freight itself as it would be for a
user with no key), so what is checked is what a user gets: several small batches instead of one of the whole folder,
never more than two open at once, and results.jsonl holding finished documents before the job ends.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from freight import api
from freight.runner.loop import Snapshot
from freight.runner.pace import Pace, measured_rate
from freight.store import Store

from .conftest import write_docs, write_schema

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _batch(n: int, submitted: float, ended: float | None) -> dict[str, object]:
    return {
        "n_requests": n,
        "submitted_at": T0 + timedelta(seconds=submitted),
        "ended_at": None if ended is None else T0 + timedelta(seconds=ended),
    }


def test_the_pace_is_measured_from_the_time_each_batch_was_being_answered() -> None:
    # Batch 2 was submitted at once but waited behind batch 1: its time counts from batch 1's end.
    history = [_batch(8, 0, 10), _batch(8, 0, 14), _batch(20, 11, None)]
    assert measured_rate(history) == pytest.approx(16 / 14)
    pace = Pace(target_seconds=60)
    assert pace.next_size(history, ceiling=None) == round(16 / 14 * 60)
    assert pace.next_size(history, ceiling=50) == 50  # --batch-size stays the ceiling
    assert pace.next_size([], ceiling=None) == pace.first_size  # nothing ended yet: a small first batch
    slow = [_batch(4, 0, 400)]  # a very slow model: never below the floor
    assert pace.next_size(slow, ceiling=None) == pace.min_size


def test_embedded_batches_follow_the_engine_and_results_flow_before_the_end(tmp_path: Path, db_url: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREIGHT_HOME", str(tmp_path / "home"))
    # Three documents cut off at max_tokens on their first reply: they end after documents that follow them.
    late = {f"inv-{i:02d}": f"vendor: Vendor {i}\ntotal: {i}.50\n[[fault:tokens=400#late{i}]]" for i in (1, 2, 9)}
    docs = write_docs(tmp_path, 40, late)
    out = tmp_path / "out"
    seen: list[tuple[int, int]] = []  # (documents final, lines in results.jsonl) at each progress snapshot

    def watch(snap: Snapshot) -> None:
        final = snap.items.get("succeeded", 0) + snap.items.get("failed", 0)
        lines = (out / "results.jsonl").read_text().count("\n") if (out / "results.jsonl").exists() else 0
        seen.append((final, lines))

    report = api.run(
        docs, db=db_url, provider="local", engine="scripted", out=out, sample=False,
        schema=json.loads(write_schema(tmp_path).read_text()), poll_interval=0.05, on_progress=watch,
        batch_size=10,  # the scripted engine's pace would size one batch of everything left: --batch-size caps it
    )  # fmt: skip
    assert report.data["succeeded"] == 40
    # Finished documents were in results.jsonl while others were not done yet, one line each.
    assert any(0 < lines < 40 for _, lines in seen), seen
    assert all(lines == final for final, lines in seen), seen  # each final document once, none twice
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [f"inv-{i:02d}" for i in range(40)]  # the end: whole, in input order

    with Store(db_url) as store:
        batches = sorted(store.batches(report.data["job"]), key=lambda b: b["id"])
    assert batches[0]["n_requests"] == Pace().first_size  # small, before anything was measured
    assert sum(report.data["retries_by_fix"].values()) == 3  # one retry each, for the three cut off
    assert all(b["n_requests"] <= 10 for b in batches) and sum(b["n_requests"] for b in batches) == 40 + 3
    # Never more than two open: each batch from the third on was submitted after the one two before it ended.
    for earlier, later in zip(batches, batches[2:], strict=False):
        assert later["submitted_at"] >= earlier["ended_at"]
