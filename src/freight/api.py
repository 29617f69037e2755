"""freight as a library: the decisions of a run, made once, for the command line and a notebook alike.

Where a run's requests go (a provider's API, a base URL, or the embedded local model), whether the embedded model may
run it, how it is priced, whether its sample lets it start, and how its errors read are decided here; `freight run`
is a thin skin that parses flags, calls this module and renders what it returns.

    import freight

    report = freight.run(
        "docs/",
        prompt="Extract the vendor and the total.\\n\\n{document}",
        schema={"type": "object", "required": ["vendor", "total"]},
        provider="anthropic",
        model="claude-haiku-4-5",
    )
    print(report.render())

Invariants: nothing here prints - what a user should be told goes to `on_notice`, progress to `on_progress` (the
runner's `Snapshot`, read from the store); every error is a `FreightError` whose `exit_code` is what the CLI exits
with; keys are read from the environment (or passed as `api_key`) and never stored. A job is identified by what it
asks and where it sends it (`runner.job.job_id_for`), so running the same thing again resumes it, and the same thing
against another endpoint is another job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freight.domain import FreightError, JobState
from freight.dryrun import estimate  # re-exported: the library's dry run
from freight.job import Job, Progress, Report, SampleGateFailed, hold, run_sample_saved
from freight.runner.accuracy import Labels
from freight.runner.job import RunOptions, job_id_for
from freight.runner.listen import WEBHOOK_SECRET_ENV, WebhookListener, listener_for
from freight.runner.loop import Snapshot
from freight.runner.notify import SECRET_ENV as NOTIFY_SECRET_ENV
from freight.runner.notify import configure as configure_notify
from freight.runner.notify import deliver as deliver_pending  # what earlier runs left unsent (even of an ended job)
from freight.runner.sample import SampleSettings
from freight.store import Holder, Store, opened
from freight.target import EMBEDDED, Notice, connect, embedded_kept, prepare, quiet

__all__ = [
    "EMBEDDED",
    "NOTIFY_SECRET_ENV",
    "WEBHOOK_SECRET_ENV",
    "Job",
    "Report",
    "RunOptions",
    "SampleGateFailed",
    "Snapshot",
    "WebhookListener",
    "cancel",
    "configure_notify",
    "connect",
    "deliver_pending",
    "estimate",
    "hold",
    "listener_for",
    "prepare",
    "resume",
    "run",
    "sample",
]

# --- one call each ------------------------------------------------------------------------------------------------


def run(
    input: str | Path,
    *,
    db: str | None = None,
    store: Store | None = None,
    sample: bool | None = None,
    sample_size: int = 8,
    min_first_pass: float = 0.9,
    poll_interval: float = 5.0,
    api_key: str | None = None,
    on_progress: Progress | None = None,
    on_notice: Notice = quiet,
    wait: bool = False,
    notify: list[str] | tuple[str, ...] = (),
    notify_secret: str | None = None,
    webhook_listen: str | None = None,
    webhook_secret: str | None = None,
    max_cost: float | None = None,
    max_cost_cancel: bool = False,
    **settings: Any,
) -> Report:
    """Run a job end to end and return its report: `prepare(input, **settings)` (prompt, schema, provider, model,
    base_url, ...), the sample gate, then the run. Running it again resumes the same job. The job's lease is taken
    first: a job another runner holds raises `JobHeld`, or with `wait=True` waits for it. `notify`: URLs that get a
    signed `job.completed` / `job.failed` / `job.stopped` / `job.needs_attention` event (runner/notify.py), signed with
    `notify_secret` (or FREIGHT_NOTIFY_SECRET). `webhook_listen` ("HOST:PORT"): verify the provider's batch events
    there with `webhook_secret` (or FREIGHT_WEBHOOK_SECRET) and poll a batch as soon as its event arrives. `max_cost`
    (US dollars): never submit work whose worst case would take the job over it; at the cap the job stops
    (`CostCapReached`) after what is in flight finishes, or is canceled with `max_cost_cancel`."""
    opts = prepare(input, api_key=api_key, on_notice=on_notice, **settings)
    opts.max_cost, opts.max_cost_cancel = max_cost, max_cost_cancel
    secret = configure_notify(opts, notify, notify_secret)
    wake = listener_for(opts.provider, webhook_listen, webhook_secret)
    with (
        wake or contextlib.nullcontext(),
        opened(db, store) as st,
        hold(st, job_id_for(opts), wait=wait) as lease,
        embedded_kept(),  # one embedded server for the sample and the run
    ):
        job = Job.open(opts, store=st, api_key=api_key, on_notice=on_notice, lease=lease, notify_secret=secret)
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(st.item_counts(job.job_id).items()))
        on_notice(f"{'resuming' if job.resumed else 'started'} {job.job_id} ({counts})")
        job.sample_gate(enabled=sample, size=sample_size, min_first_pass=min_first_pass)
        return job.run(on_progress=on_progress, poll_interval=poll_interval, wake=wake)


def resume(
    job_id: str,
    *,
    db: str | None = None,
    store: Store | None = None,
    poll_interval: float = 5.0,
    api_key: str | None = None,
    on_progress: Progress | None = None,
    wait: bool = False,
    resubmit_unacknowledged: bool = False,
    notify_secret: str | None = None,
    max_cost: float | None = None,
) -> Report:
    """Carry on a job where it stopped, where it ran: submitted batches are polled, never submitted again. Its --notify
    URLs are kept with the job; their secret is `notify_secret` (or FREIGHT_NOTIFY_SECRET). `max_cost` sets or raises
    the job's cost cap first."""
    with opened(db, store) as st, hold(st, job_id, wait=wait) as lease:
        job = Job.find(job_id, store=st, api_key=api_key, lease=lease, notify_secret=notify_secret)
        if max_cost is not None:
            job.set_max_cost(max_cost)
        return job.run(
            on_progress=on_progress, poll_interval=poll_interval, resubmit_unacknowledged=resubmit_unacknowledged
        )


def cancel(
    job_id: str, *, db: str | None = None, store: Store | None = None, api_key: str | None = None, wait: bool = False
) -> Report:
    """Cancel a job's batches at the provider; unfinished documents end canceled. With `wait=True`, a runner that
    holds the job is asked to stop (it sees the job canceling at its next pass and lets go), then it is canceled."""
    with opened(db, store) as st:

        def ask_runner_to_stop(_: Holder) -> None:
            with contextlib.suppress(FreightError):
                st.set_job_state(job_id, JobState.CANCELING)

        with hold(st, job_id, wait=wait, on_wait=ask_runner_to_stop) as lease:
            return Job.find(job_id, store=st, api_key=api_key, lease=lease).cancel()


def sample(
    input: str | Path,
    *,
    size: int = 8,
    seed: int = 0,
    min_first_pass: float = 0.9,
    db: str | None = None,
    store: Store | None = None,
    api_key: str | None = None,
    on_notice: Notice = quiet,
    labels: Labels | None = None,
    min_accuracy: float | None = None,
    on_answer: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Run a representative sample synchronously (kept in the store) and return its report: first-pass rate, each
    failure and why, projected retries and cost; `report["passed"]` says whether it clears `min_first_pass`."""
    opts = prepare(input, api_key=api_key, on_notice=on_notice, **settings)
    with opened(db, store) as st:
        settings_ = SampleSettings(size=size, seed=seed, min_first_pass=min_first_pass)
        return run_sample_saved(st, opts, settings_, api_key, labels, min_accuracy, on_answer)
