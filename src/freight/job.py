"""A job as the library hands it out: `Job.open(prepare(...), store=...)` (or `Job.find`), its sample gate, its run,
its cancel and its report - what `freight.api`'s one-call functions and `freight run` are made of. The invariants are
`freight.api`'s: nothing here prints, every error is a `FreightError` with its exit code, and keys are never stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freight.domain import FreightError, JobState, UsageError
from freight.providers import key_env
from freight.runner.accuracy import Labels, gate_message, judge
from freight.runner.budget import current_cap, set_cap
from freight.runner.feed import ResultsFeed
from freight.runner.hedge import policy_for
from freight.runner.job import RunOptions, open_job, resume_job
from freight.runner.listen import WebhookListener
from freight.runner.loop import Runner, Snapshot, finished
from freight.runner.notify import deliver, event
from freight.runner.pace import Pace
from freight.runner.report import Written, build_report, priced, render_report
from freight.runner.sample import GATE_THRESHOLD_DOCUMENTS, SampleSettings, run_sample, save_sample
from freight.store import Holder, JobLease, Store
from freight.target import EMBEDDED_MAX_POLL, EMBEDDED_POLL, Notice, connect, quiet

Progress = Callable[[Snapshot], None]


class SampleGateFailed(FreightError):
    """The sample's first-pass rate was below the gate: nothing was submitted and the job is stopped. `report` is the
    sample's report, for rendering."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Report:
    """A job's final report (also written to `out` as report.json, with results.jsonl and failures.jsonl)."""

    data: dict[str, Any]
    out: Path | None = None

    @property
    def job_id(self) -> str:
        return str(self.data["job"])

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def succeeded(self) -> int:
        return int(self.data["succeeded"])

    @property
    def failed(self) -> int:
        return int(self.data["failed"])

    @property
    def cost_usd(self) -> float | None:
        """What the job was billed, its sample included; None ("unknown") when a model had no price."""
        value = self.data["cost_usd"]
        return None if value is None else float(value)

    def render(self) -> str:
        return render_report(self.data)


# --- a job --------------------------------------------------------------------------------------------------------


def hold(store: Store, job_id: str, *, wait: bool = False, on_wait: Callable[[Holder], None] | None = None) -> JobLease:
    """Take the job's lease (one runner per job) before anything reads or writes it; release it with `with` or
    `.release()`. Held by a live runner: `JobHeld` (exit 3) naming it, or with `wait=True` wait for it."""
    return JobLease(store, job_id, wait=wait, on_wait=on_wait).acquire()


class Job:
    """One job in a store: `Job.open(prepare(...), store=...)` creates it (or finds it again), then `sample_gate()`,
    `run()`, or `cancel()`. `freight.run(...)` does all of it."""

    def __init__(
        self,
        store: Store,
        job_id: str,
        opts: RunOptions,
        *,
        resumed: bool,
        api_key: str | None = None,
        on_notice: Notice = quiet,
        lease: JobLease | None = None,
        notify_secret: str | None = None,
    ) -> None:
        self.store = store
        self.notify_secret = notify_secret  # signs --notify events; never stored
        self.lease = lease  # held by the caller (see `hold`); without one, run and cancel take it themselves
        self.job_id = job_id
        self.opts = opts
        self.resumed = resumed
        self._api_key = api_key
        self.on_notice = on_notice

    @classmethod
    def open(
        cls,
        opts: RunOptions,
        *,
        store: Store,
        api_key: str | None = None,
        on_notice: Notice = quiet,
        lease: JobLease | None = None,
        notify_secret: str | None = None,
    ) -> Job:
        job, resumed = open_job(store, opts)
        if opts.max_cost is not None:  # kept in the job's log, where resume finds it (runner/budget.py)
            set_cap(store, job.job_id, opts.max_cost, opts.max_cost_cancel)
        return cls(
            store, job.job_id, opts, resumed=resumed, api_key=api_key, on_notice=on_notice, lease=lease,
            notify_secret=notify_secret,
        )  # fmt: skip

    @classmethod
    def find(
        cls,
        job_id: str,
        *,
        store: Store,
        api_key: str | None = None,
        on_notice: Notice = quiet,
        lease: JobLease | None = None,
        notify_secret: str | None = None,
    ) -> Job:
        """A job already in the store, with the options it was started with (so resume needs no flags)."""
        job, opts = resume_job(store, job_id)
        if "engine" not in job.config and not opts.base_url:
            # A job stored before the endpoint was part of a job: it ran where no key pointed elsewhere.
            env = key_env(opts.provider)
            if not (api_key or (env and os.environ.get(env))):
                opts.engine = "local"
        return cls(
            store, job_id, opts, resumed=True, api_key=api_key, on_notice=on_notice, lease=lease,
            notify_secret=notify_secret,
        )  # fmt: skip

    def set_max_cost(self, usd: float | None, cancel: bool | None = None) -> None:
        """Set, raise or (None) lift the job's cost cap; `cancel`: whether reaching it cancels in-flight batches
        (unchanged when None)."""
        if usd is not None and usd < 0:
            raise UsageError(f"--max-cost {usd}: a cap is a positive number of US dollars")
        _, was = current_cap(self.store, self.job_id, self.opts)
        set_cap(self.store, self.job_id, usd, was if cancel is None else cancel)

    @property
    def state(self) -> JobState:
        job = self.store.get_job(self.job_id)
        assert job is not None
        return job.state

    @property
    def priced(self) -> bool:
        """False once a request of this job had no price (its costs read unknown)."""
        return priced(self.store, self.job_id)

    def out_dir(self) -> Path:
        return Path(self.opts.out) if self.opts.out else Path("freight-out") / self.job_id

    def sample_gate(
        self,
        *,
        enabled: bool | None = None,
        size: int = 8,
        min_first_pass: float = 0.9,
        labels: Labels | None = None,
        min_accuracy: float | None = None,
        on_answer: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any] | None:
        """Before anything is submitted: sample a job not started yet, and stop it when the first-pass rate is below
        `min_first_pass`, or (with `labels`) its field accuracy below `min_accuracy` (raises `SampleGateFailed`,
        exit 1). `enabled` None samples inputs over 50 documents; True always; False never. A job already running,
        or stopped after it submitted batches (Ctrl-C), is not sampled again. Returns the sample's report, or None."""
        state = self.state
        if enabled is False or state not in (JobState.CREATED, JobState.SAMPLING, JobState.STOPPED):
            return None
        if self.store.batches(self.job_id):
            return None
        documents = sum(self.store.item_counts(self.job_id).values())
        if enabled is None and documents <= GATE_THRESHOLD_DOCUMENTS:
            return None
        if state is not JobState.SAMPLING:
            self.store.set_job_state(self.job_id, JobState.SAMPLING)
        self.on_notice(f"sampling {size} of {documents} documents first (--no-sample skips this)")
        settings = SampleSettings(size=size, min_first_pass=min_first_pass)
        report = run_sample_saved(self.store, self.opts, settings, self._api_key, labels, min_accuracy, on_answer)
        spend = report["spend"]
        for model in spend["unpriced"]:
            self.store.log(self.job_id, "cost.unpriced", model=model, message=f"the sample: no price for {model!r}")
        # The sample's spend goes in the job's log, where the report adds it to the job's cost.
        self.store.log(
            self.job_id,
            "sample.gate",
            sample_id=report["sample_id"],
            rate=report["first_pass_rate"],
            passed=report["passed"],
            cost_usd=spend["cost_usd"] or 0.0,
        )
        if report["passed"]:
            return report
        message = gate_message(report, self.opts, self.job_id)
        attention = event(
            self.store, self.job_id, self.opts, "job.needs_attention", state=JobState.STOPPED, reason="sample_gate",
            message=message,
        )  # fmt: skip
        self.store.set_job_state(self.job_id, JobState.STOPPED, notify=attention)
        self.deliver_notifications()
        raise SampleGateFailed(message, report)

    def run(
        self,
        *,
        on_progress: Progress | None = None,
        poll_interval: float = 5.0,
        resubmit_unacknowledged: bool = False,
        wake: WebhookListener | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> Report:
        """Run the job to its end (submit, poll, ingest, fix, resume what was left) and write its outputs.
        `resubmit_unacknowledged`: send again a batch an earlier run submitted without hearing back, when the provider
        cannot tell whether it got it (it may be billed twice: the job stops and says so unless this is given).
        `wake`: a started `WebhookListener`; a verified batch event for this job polls at once (`--webhook-listen`)."""
        feed = ResultsFeed(self.store, self.job_id, self.out_dir())

        def progress(snapshot: Snapshot) -> None:
            feed.update(finished(snapshot.items))
            if on_progress is not None:
                on_progress(snapshot)

        # On the embedded model the batches are sized to its pace and polled often (loopback costs nothing), so
        # results flow batch by batch (runner/pace.py); a provider's batches keep the sizes and polling given.
        embedded = bool(self.opts.engine)
        try:
            with connect(self.opts, self._api_key) as provider:
                runner = Runner(
                    self.store,
                    provider,
                    self.job_id,
                    self.opts,
                    poll_interval=min(poll_interval, EMBEDDED_POLL) if embedded else poll_interval,
                    max_poll_interval=EMBEDDED_MAX_POLL if embedded else 60.0,
                    batch_size=self.opts.extra.get("batch_size"),
                    pace=Pace() if embedded else None,
                    on_progress=progress,
                    lease=self.lease,
                    resubmit_unacknowledged=resubmit_unacknowledged,
                    hedge=policy_for(self.opts),  # with a deadline: hedged (runner/hedge.py), on `wall_clock`
                    wall_clock=wall_clock,
                )
                if wake is not None:
                    runner.sleep = wake.sleeper(self.store, self.job_id, runner.note)
                runner.run()
        finally:  # what the run announced (completed, stopped ...), and anything an earlier run left unsent
            feed.close()
            self.deliver_notifications()
        return self.report(written=feed)

    def cancel(self) -> Report:
        """Cancel the job's batches at the provider; unfinished documents end canceled."""
        if self.state is not JobState.CANCELING:
            self.store.set_job_state(self.job_id, JobState.CANCELING)
        with connect(self.opts, self._api_key) as provider:
            Runner(self.store, provider, self.job_id, self.opts, poll_interval=1.0, lease=self.lease).cancel()
        self.deliver_notifications()
        return Report(build_report(self.store, self.job_id))

    def deliver_notifications(self) -> int:
        """Send the job's pending --notify events (signed with `notify_secret`); returns how many are left unsent."""
        return deliver(self.store, self.job_id, self.notify_secret, on_notice=self.on_notice)

    def report(self, written: Written | None = None) -> Report:
        """The report, and results.jsonl, failures.jsonl and report.json in the output folder (`written`: the lines
        a run's feed wrote as it went, put in input order when they are complete)."""
        out = self.out_dir()
        return Report(build_report(self.store, self.job_id, write_to=out, written=written), out)


def run_sample_saved(
    store: Store,
    opts: RunOptions,
    settings: SampleSettings,
    api_key: str | None,
    labels: Labels | None = None,
    min_accuracy: float | None = None,
    on_answer: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run a sample synchronously, judge it against `labels` when given, and keep its report in the store."""
    try:
        with connect(opts, api_key) as provider:
            report = run_sample(provider, opts, settings, on_answer)
    except ValueError as exc:  # the sample's own checks (a size, a seed) on this input
        raise UsageError(str(exc)) from None
    if labels is not None:
        judge(report, labels, min_accuracy)
    report["sample_id"] = save_sample(store, opts, report)
    return report
