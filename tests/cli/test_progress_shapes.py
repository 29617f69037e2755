"""The progress display's piped and JSON shapes, fed the runner's Snapshot directly (the live shape is tested on a
pseudo terminal in test_progress_tty.py)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from freight.cli.progress import JsonDisplay, PlainDisplay, render
from freight.runner.loop import Snapshot


def _snap(elapsed: float, done: int, pending: int, notes: list[str] | None = None) -> Snapshot:
    return Snapshot(
        job_id="job_abc",
        items={"succeeded": done, "pending": pending, "failed": 1},
        batches=[("msgbatch_1", "ended", 20), ("msgbatch_2", "in_progress", 10)],
        elapsed=elapsed,
        cost_usd=0.0123,
        notes=notes or [],
    )


def test_piped_lines_say_what_moved_with_rate_eta_and_cost_and_notes_once() -> None:
    out = io.StringIO()
    now = [0.0]
    show = PlainDisplay(out, quiet=30, clock=lambda: now[0])
    show(_snap(10, 19, 10))
    show(_snap(11, 19, 10))  # nothing moved: no line
    show(_snap(12, 24, 5, notes=["polling msgbatch_2 failed for now: overloaded"]))
    show(_snap(13, 24, 5, notes=["polling msgbatch_2 failed for now: overloaded"]))  # the same note: not again
    now[0] = 40.0
    show(_snap(40, 24, 5))  # nothing moved for 30 s: a heartbeat
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "[   10s] done 19  failed 1  pending 10  |  batches: 2 (1 ended, 1 in_progress)  |  2.0 docs/s, eta 5s  |  "
        "cost $0.0123"
    )
    assert lines[1] == "note: polling msgbatch_2 failed for now: overloaded"
    assert lines[2].startswith("[   12s] done 24  failed 1  pending 5")
    assert lines[3].startswith("[   40s] done 24") and len(lines) == 4


def test_documents_final_before_the_run_began_are_not_in_its_rate() -> None:
    # A resumed job (or one whose sample answered some documents): 19 + 1 were final when this run's clock started.
    out = io.StringIO()
    show = PlainDisplay(out)
    before = _snap(0, 19, 10)
    show(Snapshot(**{**before.__dict__, "finished_before": 20}))
    show(Snapshot(**{**_snap(10, 24, 5).__dict__, "finished_before": 20}))
    first, second = out.getvalue().splitlines()
    assert first.startswith("[    0s] done 19") and "-, eta -" in first  # no rate yet, not 20 documents in 0 s
    assert "0.5 docs/s, eta 10s" in second  # 5 documents in 10 s: the 5 pending take 10 s more


def test_json_events_are_one_object_a_line() -> None:
    out = io.StringIO()
    show = JsonDisplay(out)
    show(_snap(10, 19, 10, notes=["a note"]))
    show(_snap(11, 19, 10))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0] == {"event": "note", "message": "a note"}
    assert events[1]["event"] == "progress" and events[1]["done"] == 19 and events[1]["pending"] == 10
    assert events[1]["batches"] == {"ended": 1, "in_progress": 1} and events[1]["cost_usd"] == 0.0123
    assert len(events) == 2  # the second snapshot moved nothing


def test_the_live_view_shows_the_bar_and_the_figures() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)
    with console.capture() as cap:
        console.print(render(_snap(10, 19, 10)))
    text = cap.get()
    assert "job_abc" in text and "20/30" in text and "━" in text
    assert "done 19  failed 1  pending 10" in text and "eta 5s" in text and "$0.0123" in text
