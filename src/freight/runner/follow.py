"""Following a job other processes run: the workers of a shared store advance it, this process only reads.

`freight run --follow` (and `freight submit --follow`) on PostgreSQL hand the job to the workers and watch it. The
store is the only truth, so following is reading: the same `Snapshot` the runner's loop gives its progress display is
read from the store at every look, and the notes the job's log gained since the last look are shown once each. Nothing
here writes: a follower killed anywhere (Ctrl-C, a closed terminal) leaves the job exactly as the workers have it.

How a followed job ended is read from its log, so the follower ends the way a run in the foreground would have: the
report on completion, and on a stop the message the worker's runner stopped with and its exit code (1 for the cost
cap, which is a decision, not a fault; 4 for the rest, as `JobStopped`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from freight.domain import ExitCode, JobState
from freight.runner.loop import Snapshot, finished
from freight.store import Store


@dataclass(frozen=True)
class Ended:
    """How a followed job ended: its state, and for a stopped job what stopped it and the exit code that says so."""

    state: JobState
    message: str = ""
    exit_code: int = ExitCode.OK


def snapshot(
    store: Store, job_id: str, elapsed: float, after_event: int, finished_before: int = 0
) -> tuple[Snapshot, int]:
    """The job as the runner's own progress display would see it, with the notes logged after event `after_event`.
    Returns it and the id of the last event read (where the next look starts)."""
    notes: list[str] = []
    last = after_event
    for e in store.events(job_id, kind="note"):
        if e["id"] > after_event:
            notes.append(str(e["data"].get("message", "")))
            last = max(last, int(e["id"]))
    return (
        Snapshot(
            job_id=job_id,
            items=store.item_counts(job_id),
            batches=[
                (r["provider_batch_id"] or "(preparing)", r["state"], r["n_requests"]) for r in store.batches(job_id)
            ],
            elapsed=elapsed,
            cost_usd=store.totals(job_id)["cost_usd"],
            notes=notes,
            finished_before=finished_before,
        ),
        last,
    )


def last_note_id(store: Store, job_id: str) -> int:
    """Where a follower starts reading notes: those logged before it came are the past, not news."""
    return max((int(e["id"]) for e in store.events(job_id, kind="note")), default=0)


def follow(
    store: Store,
    job_id: str,
    on_progress: Callable[[Snapshot], None],
    *,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_idle: Callable[[], None] | None = None,
) -> Ended:
    """Show the job's progress until it is completed, canceled or stopped; return how it ended. `on_idle` is called at
    each look where nothing moved (the CLI says there when no live worker is left to move it)."""
    started = clock()
    before = finished(store.item_counts(job_id))  # what was final before following began: not in the rate
    seen = last_note_id(store, job_id)
    shown: tuple[object, ...] = ()
    while True:
        job = store.get_job(job_id)
        assert job is not None
        snap, seen = snapshot(store, job_id, clock() - started, seen, before)
        key = (job.state, tuple(sorted(snap.items.items())), tuple(snap.batches), snap.cost_usd)
        if key != shown or snap.notes:
            on_progress(snap)
            shown = key
        elif on_idle is not None:
            on_idle()
        if job.state.terminal:  # stopped included: a stopped job waits for a person, not for a worker
            return ended(store, job_id, job.state)
        sleep(interval)


def ended(store: Store, job_id: str, state: JobState) -> Ended:
    if state is not JobState.STOPPED:
        return Ended(state)
    stops = store.events(job_id, kind="job.stopped")
    message = str(stops[-1]["data"].get("message", "")) if stops else ""
    attention = store.events(job_id, kind="job.needs_attention")
    cost_cap = bool(attention) and attention[-1]["data"].get("reason") == "cost_cap" and message.startswith("cost cap")
    return Ended(state, message or "the job stopped", ExitCode.FAILED if cost_cap else ExitCode.STOPPED)
