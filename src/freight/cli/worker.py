"""`freight submit`, `freight worker`, `freight workers`: many workers sharing one PostgreSQL store.

`submit` records a job with the options of `freight run` and prints its id; `worker` claims queued jobs and runs them
(`freight.runner.worker`); `workers` lists the live ones and what they hold. SQLite stays one machine: `freight run`
is its one-command path, and its lease keeps local processes apart, so a worker there is refused with the reason.
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import time
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from freight import api
from freight.cli import run as run_cmd
from freight.cli.common import DbOption, fail, fail_with, open_store, print_json, read_option_file, read_prompt
from freight.cli.common import read_schema as read_schema_file
from freight.domain import ExitCode, FreightError, JobState
from freight.providers import Provider
from freight.runner.budget import set_cap
from freight.runner.job import RunOptions, open_job
from freight.runner.report import build_report, render_report
from freight.runner.worker import Worker, WorkerOptions
from freight.store import Store

# `freight submit` takes `freight run`'s options (its signature, below), less those that only mean something to a run
# in the foreground: the sample gate and the labels it is judged on, --check, --wait, --json.
_RUN_ONLY = {
    "sample",
    "sample_size",
    "min_first_pass",
    "expected",
    "min_accuracy",
    "check",
    "wait",
    "as_json",
    "poll_interval",
    "dry_run",  # a forecast runs nothing: `freight estimate` gives it without queueing a job
    "webhook_listen",  # a worker polls; a listener belongs to the process that follows a batch
    "webhook_secret",
    "follow",  # submit has its own --follow (below): it always hands the job to the workers
}

_ONE_MACHINE = (
    "{what} needs a PostgreSQL store (--db postgresql://...): a SQLite store is one machine, where `freight run` is "
    "the one-command path and its lease already keeps local processes from running one job twice"
)


def _notice(message: str) -> None:
    typer.echo(message, err=True)


def _shared_store(db: str | None, what: str) -> Store:
    _require_shared(db, what)
    return open_store(db)


def _require_shared(db: str | None, what: str) -> None:
    if db is None or not db.startswith(("postgresql://", "postgres://")):
        fail(_ONE_MACHINE.format(what=what), ExitCode.USAGE)


def submit(**kw: Any) -> None:
    """Record a job for the workers (the options of `freight run`) and print its id; nothing is sent."""
    db, priority, follow = kw.pop("db"), kw.pop("priority"), kw.pop("follow")
    max_cost, max_cost_cancel = kw.pop("max_cost"), kw.pop("max_cost_cancel")
    notify, notify_secret = kw.pop("notify"), kw.pop("notify_secret")
    _require_shared(db, "freight submit")
    try:
        opts = api.prepare(
            kw.pop("input"),
            prompt=read_prompt(kw.pop("prompt"), kw.pop("prompt_text")) or "{document}",
            system=read_option_file(kw.pop("system"), "--system"),
            schema=read_schema_file(kw.pop("schema")),
            fallback_prompt=read_prompt(kw.pop("fallback_prompt"), None, "--fallback-prompt"),
            on_notice=_notice,
            **kw,
        )
        # The workers sign with their own FREIGHT_NOTIFY_SECRET: the URLs travel with the job, the secret never does.
        api.configure_notify(opts, notify, notify_secret)
        opts.max_cost, opts.max_cost_cancel = max_cost, max_cost_cancel
    except FreightError as exc:
        fail_with(exc)
    if opts.engine:
        fail(
            "the embedded model runs inside the process that starts it, so workers cannot share it: give --base-url "
            "or a provider's key to submit, or use `freight run` for the embedded model",
            ExitCode.USAGE,
        )
    with _shared_store(db, "freight submit") as store:
        try:
            job, resumed = open_job(store, opts)
        except FreightError as exc:
            fail_with(exc)
        if max_cost is not None:  # kept in the job's log, where the worker that runs it finds it (runner/budget.py)
            set_cap(store, job.job_id, max_cost, max_cost_cancel)
        if job.state in (JobState.COMPLETED, JobState.CANCELED):
            _notice(f"{job.job_id} is already {job.state.value}: `freight results {job.job_id}`")
        else:
            store.enqueue_job(job.job_id, priority)
            counts = ", ".join(f"{v:,} {k}" for k, v in sorted(store.item_counts(job.job_id).items()))
            _notice(f"{'queued again' if resumed else 'queued'} {job.job_id} ({counts}), priority {priority}")
    typer.echo(job.job_id)
    if follow:
        _follow(db, job.job_id, opts)


def _follow(db: str | None, job_id: str, opts: RunOptions) -> None:
    """Wait on the store while the workers run the job, saying how it moves; then its report (and outputs)."""
    with open_store(db) as store:
        shown = ""
        while True:
            job = store.get_job(job_id)
            assert job is not None
            counts = ", ".join(f"{k} {v:,}" for k, v in sorted(store.item_counts(job_id).items()))
            line = f"{job_id}: {job.state.value}; {counts}"
            if line != shown:
                _notice(line)
                shown = line
            if job.state.terminal:
                break
            time.sleep(1.0)
        out = Path(opts.out) if opts.out else Path("freight-out") / job_id
        report = build_report(store, job_id, write_to=out)
    typer.echo(render_report(report))
    typer.echo(f"outputs: {out}/results.jsonl, failures.jsonl, report.json")
    if job.state is JobState.STOPPED:
        fail(f"job {job_id} stopped: `freight status {job_id}` says why", ExitCode.STOPPED)


def _submit_signature() -> None:
    """`submit` takes the parameters of `run` (one list of options, so the two cannot drift), plus --priority."""
    hints = typing.get_type_hints(run_cmd.run)
    params = [
        p.replace(annotation=hints[name])
        for name, p in inspect.signature(run_cmd.run).parameters.items()
        if name not in _RUN_ONLY
    ]
    params.append(
        inspect.Parameter(
            "priority",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=int,
            default=typer.Option(0, help="Workers take higher-priority jobs first."),
        )
    )
    params.append(
        inspect.Parameter(
            "follow",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(False, "--follow", help="Wait while the workers run it, then print its report."),
        )
    )
    # KEYWORD_ONLY throughout: the order of `run`'s positional parameters is kept by typer from the list itself.
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    submit.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    submit.__annotations__ = {p.name: p.annotation for p in params}


_submit_signature()


def _provider_for(opts: RunOptions) -> contextlib.AbstractContextManager[Provider]:
    return api.connect(opts)


def worker(
    db: str | None = DbOption,
    concurrency: int = typer.Option(1, min=1, help="Jobs this worker runs at once."),
    max_jobs: int | None = typer.Option(None, min=1, help="Take at most this many jobs, then exit once they are done."),
    lease_ttl: float = typer.Option(30.0, min=1.0, help="Seconds a claim outlives this worker's last heartbeat."),
    poll_interval: float = typer.Option(5.0, min=0.0, help="Seconds between polls of a job's batches."),
    idle_poll: float = typer.Option(2.0, min=0.01, help="Seconds between looks at the queue when it is empty."),
    exit_when_idle: bool = typer.Option(False, "--exit-when-idle", help="Exit once no queued job is left open."),
    max_active_batches: int | None = typer.Option(
        None, min=1, help="Open batches per provider, counted across every worker of this store."
    ),
) -> None:
    """Claim queued jobs from a shared PostgreSQL store and run them. SIGTERM: finish the step in hand, release the
    rest, exit 0."""
    with _shared_store(db, "freight worker") as store:
        opts = WorkerOptions(
            concurrency=concurrency,
            max_jobs=max_jobs,
            lease_ttl=lease_ttl,
            poll_interval=poll_interval,
            idle_poll=idle_poll,
            exit_when_idle=exit_when_idle,
            max_active_batches=max_active_batches,
        )
        w = Worker(store, _provider_for, opts, say=_notice)

        def stop(signum: int, _frame: Any) -> None:
            _notice(f"{w.worker_id}: {signal.Signals(signum).name}: finishing the step in hand, then releasing")
            w.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        where = store.engine.url.render_as_string(hide_password=True)
        _notice(f"{w.worker_id}: working ({concurrency} at once) on {where}")
        w.run()
        _notice(f"{w.worker_id}: stopped; {len(w.finished)} job(s) completed")


def _ago(at: datetime) -> str:
    return f"{max(0.0, time.time() - at.timestamp()):.0f} s ago"


def workers(
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    all_: bool = typer.Option(False, "--all", help="Also list workers that died without stopping."),
) -> None:
    """The live workers of a shared store: where they run, what they hold, their last heartbeat."""
    with _shared_store(db, "freight workers") as store:
        found = store.list_workers(include_dead=all_)
        queued = store.queued_jobs()
    if as_json:
        print_json({"workers": [w.__dict__ | {"alive": w.alive} for w in found], "queue": queued})
        return
    if not found:
        typer.echo("no live workers (start one: freight worker --db postgresql://...)")
    for w in found:
        state = w.state if w.alive else "dead (no heartbeat)"
        holds = ", ".join(w.claims) or "nothing"
        helping = f"  stepping {', '.join(w.batches)}" if w.batches else ""
        typer.echo(
            f"{w.worker_id}  pid {w.pid} on {w.host}  {state}  {len(w.claims)}/{w.concurrency} slots: {holds}  "
            f"last heartbeat {_ago(w.heartbeat_at)}{helping}"
        )
    waiting = [q for q in queued if not any(q["job_id"] in w.claims for w in found)]
    typer.echo(f"queue: {len(queued)} open job(s), {len(waiting)} waiting for a worker")


def register(app: typer.Typer) -> None:
    for fn in (submit, worker, workers):
        app.command(fn.__name__)(fn)
