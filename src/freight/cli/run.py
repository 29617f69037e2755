"""`freight run`, `resume`, `status`, `results`, `cancel`: the main job from the command line.

A thin skin over `freight.api`: parse the flags, call the library, render what it returns. Every decision of a run
(where it goes, the embedded model, pricing, the sample gate) is made there, so a notebook makes it the same way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from freight import api
from freight.cli.common import (
    PROVIDER_HELP,
    DbOption,
    fail,
    fail_with,
    open_store,
    print_json,
    read_labels,
    read_option_file,
    read_prompt,
    read_schema,
)
from freight.cli.progress import display_for, working
from freight.cli.sample_view import render_sample
from freight.domain import ExitCode, FreightError, JobState, UsageError
from freight.runner.accuracy import Labels, render_accuracy, score
from freight.runner.budget import CostCapReached
from freight.runner.checks import check_store_url
from freight.runner.inputs import input_kind, read_input
from freight.runner.job import RunOptions, job_id_for
from freight.runner.report import build_report, item_results, money, priced, render_report, sample_spend
from freight.store import Holder, JobLease, Store


def _notice(message: str) -> None:
    typer.echo(message, err=True)


def _hold(store: Store, job_id: str, wait: bool, then: Callable[[], None] | None = None) -> JobLease:
    """The job's lease, taken before anything reads or writes the job (exit 3 when another runner holds it).
    `then`: what to do once, when the job turns out to be held and we wait for it."""

    def waiting(holder: Holder) -> None:
        _notice(f"waiting for {holder.describe()} to finish with {job_id}")
        if then is not None:
            then()

    try:
        return api.hold(store, job_id, wait=wait, on_wait=waiting)
    except FreightError as exc:
        fail_with(exc)


def _drive(
    job: api.Job,
    poll: float,
    as_json: bool,
    labels: Labels | None = None,
    resubmit_unacknowledged: bool = False,
    wake: api.WebhookListener | None = None,
) -> None:
    display = display_for(as_json)
    display.priced = lambda: job.priced
    # The sample's spend is the job's too: the display's cost ends where the report's does.
    display.spent_before = sample_spend(job.store, job.job_id)
    if wake is not None:
        _notice(f"listening for batch webhooks at {wake.url}")
    try:
        with wake or contextlib.nullcontext(), display:
            report = job.run(
                on_progress=display, poll_interval=poll, resubmit_unacknowledged=resubmit_unacknowledged, wake=wake
            )
    except KeyboardInterrupt:
        _detached(job)
    except CostCapReached as exc:  # its message already says how to go on
        fail(str(exc), exc.exit_code)
    except FreightError as exc:
        fail(f"{exc}\nthe job is saved: fix the cause and run `freight resume {job.job_id}`", exc.exit_code)
    accuracy = _accuracy(job, labels)
    if as_json:
        print_json({**report.data, "accuracy": accuracy} if accuracy else report.data)
    else:
        typer.echo(report.render())
        if accuracy:
            typer.echo(render_accuracy(accuracy))
        vectors = (
            ", embeddings.npy, embeddings.ids.txt"
            if report.out and (report.out / "embeddings.ids.txt").exists()
            else ""
        )
        typer.echo(f"outputs: {report.out}/results.jsonl, failures.jsonl, report.json{vectors}")


def _accuracy(job: api.Job, labels: Labels | None) -> dict[str, Any] | None:
    """Succeeded means valid; against --expected, how many fields are also right."""
    if labels is None:
        return None
    return score(((r["id"], r["output"]) for r in item_results(job.store, job.job_id)), labels)


def _detached(job: api.Job) -> None:
    """Ctrl-C: the job is saved; its state says it is not running any more, and the message says where its batches
    are - at the provider they go on; on the embedded server they wait for the next run, since it stops with us."""
    if job.state in (JobState.RUNNING, JobState.SAMPLING):
        job.store.set_job_state(job.job_id, JobState.STOPPED)
    job.store.log(job.job_id, "job.detached", reason="interrupted (Ctrl-C)")
    if job.opts.engine:
        where = "the embedded server stops with freight, so its batches wait (kept in $FREIGHT_HOME) until you resume"
    else:
        where = f"batches already submitted keep running at {job.opts.endpoint}; resuming collects their results"
    typer.echo(
        f"\ninterrupted: detached from {job.job_id}, which is saved and stopped; {where}. "
        f"Resume with: freight resume {job.job_id}",
        err=True,
    )
    raise typer.Exit(ExitCode.INTERRUPTED)


def _check_only(opts: RunOptions, db: str | None) -> None:
    """`freight run --check`: everything `run` would refuse, found by reading alone; nothing is sent or stored."""
    path = Path(opts.input)
    documents = unreadable = 0
    for doc in read_input(path, opts.id_field, opts.text_field):
        documents += 1
        if doc.error:
            unreadable += 1
            typer.echo(f"note: {doc.error}", err=True)
        elif doc.note:
            typer.echo(f"note: {doc.note}", err=True)
    if db is not None:
        note = check_store_url(db, explicit=True)
        if note:
            typer.echo(f"note: {note.replace('creating', 'a run would create')}", err=True)
    lines = [
        f"input: {documents:,} documents ({input_kind(path)}: {opts.input})"
        + (f", {unreadable} of them unreadable (they would fail alone)" if unreadable else ""),
        "prompt: has {document}" + (", schema: a valid JSON Schema" if opts.schema else ", no schema"),
        f"provider: {opts.provider} at {opts.endpoint}, model {opts.model}, mode {opts.mode}"
        + (f", endpoint {opts.api}" if opts.api != "chat" else ""),
        f"store: {db or 'the default store'}",
        "check passed: nothing was sent and no job was made",
    ]
    typer.echo("\n".join(lines))


def run(
    input: Path = typer.Argument(
        ...,
        help="A folder of .txt/.md/.json files, a JSONL/CSV of documents, or a JSONL file of provider batch requests.",
    ),
    prompt: Path | None = typer.Option(
        None, "--prompt", "-p", help="Prompt template file; {document} is replaced by the document."
    ),
    prompt_text: str | None = typer.Option(None, "--prompt-text", help="The prompt template given inline."),
    system: Path | None = typer.Option(None, help="System prompt file."),
    schema: Path | None = typer.Option(
        None, "--schema", "-s", help="JSON Schema the output must satisfy (asks for JSON)."
    ),
    fallback_prompt: Path | None = typer.Option(None, help="Simpler prompt for documents that keep failing."),
    provider: str = typer.Option("anthropic", help=PROVIDER_HELP),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model name: required with a key or --base-url; on the embedded model, its own (smollm2-135m).",
    ),
    base_url: str | None = typer.Option(None, help="Provider API base URL (e.g. a freight serve)."),
    max_tokens: int = typer.Option(1024, min=1),
    max_retries: int = typer.Option(2, min=0, help="Retries per document."),
    mode: str = typer.Option("batch", help="batch | sync | auto (route by freight.plan)."),
    deadline: str | None = typer.Option(
        None,
        help="When the results are needed (ISO 8601). In batch mode the job is hedged: what the batches have not "
        "finished at the last safe moment is canceled and sent synchronously. With --mode auto, a deadline inside the "
        "batch window runs sync from the start.",
    ),
    hedge_margin: float | None = typer.Option(
        None, help="With --deadline: seconds kept in hand beyond the synchronous time (default 600)."
    ),
    hedge_duplicate: bool = typer.Option(
        False,
        "--hedge-duplicate",
        help="With --deadline: leave batches running and also send synchronously (pays twice).",
    ),
    sync_seconds: float | None = typer.Option(
        None, help="With --deadline: seconds one synchronous request takes, for the hedge's estimate (default 20)."
    ),
    sync_rpm: float | None = typer.Option(None, help="With --deadline: the provider's requests-per-minute limit."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default freight-out/JOB)."),
    engine: str = typer.Option("local", help="Engine of the embedded server, when the run is on it: local | scripted."),
    id_field: str | None = typer.Option(None, help="Id column of a JSONL/CSV input."),
    text_field: str | None = typer.Option(None, help="Text column of a JSONL/CSV input."),
    poll_interval: float = typer.Option(5.0, help="Seconds between polls (backs off when nothing moves)."),
    batch_size: int = typer.Option(
        5000,
        min=1,
        help="At most this many requests per batch (and never over the provider's limits). A batch's body is built "
        "in memory to be sent, so this bounds the runner's memory; more batches cost nothing but polls.",
    ),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    # --- sample gate (issue 8; freight.cli.sample) ---
    sample: bool | None = typer.Option(
        None, "--sample/--no-sample", help="Sample first: by default when the input has over 50 documents."
    ),
    sample_size: int = typer.Option(8, min=1, help="Documents in that sample."),
    min_first_pass: float = typer.Option(0.9, min=0.0, max=1.0, help="Stop before submitting below this sample rate."),
    # --- pricing ---
    prices: Path | None = typer.Option(None, help="A price table (the shape of freight/plan/prices.yaml) over ours."),
    price_as: str | None = typer.Option(
        None, help="Price models the table does not list (an Azure deployment) as this listed model."
    ),
    allow_unpriced: bool = typer.Option(
        False, "--allow-unpriced", help="Run a model with no price anyway; every cost then reads unknown."
    ),
    # --- accuracy against labels ---
    expected: Path | None = typer.Option(
        None, help="JSONL of labelled outputs ({id, output}): report field accuracy, and gate the sample on it."
    ),
    min_accuracy: float | None = typer.Option(
        None, min=0.0, max=1.0, help="With --expected: stop before submitting when the sample's accuracy is below."
    ),
    endpoint: str = typer.Option(
        "chat",
        "--endpoint",
        help="The API for each document: chat | responses (OpenAI, Azure) | embeddings (also Gemini).",
    ),
    dimensions: int | None = typer.Option(None, help="With --endpoint embeddings: the vectors' size."),
    check: bool = typer.Option(False, "--check", help="Only check the input, prompt, schema, model and store."),
    # --- cost (issue 18; freight.cli.estimate, freight.runner.budget) ---
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Count and price the run (the model's own token counter); send nothing for inference."
    ),
    max_cost: float | None = typer.Option(
        None, "--max-cost", min=0.0, help="US dollars: never submit work whose worst case would take the job over."
    ),
    max_cost_cancel: bool = typer.Option(
        False, "--max-cost-cancel", help="At the cap, cancel the batches in flight instead of letting them finish."
    ),
    wait: bool = typer.Option(False, "--wait", help="If another runner holds the job, wait for it instead of exit 3."),
    # --- notifications (runner/notify.py, docs/webhooks.md) ---
    notify: list[str] = typer.Option(
        [], "--notify", help="POST a signed job.completed / failed / stopped / needs_attention event here (repeatable)."
    ),
    notify_secret: str | None = typer.Option(
        None, envvar=api.NOTIFY_SECRET_ENV, help="whsec_... secret --notify events are signed with (Standard Webhooks)."
    ),
    webhook_listen: str | None = typer.Option(
        None, help="HOST:PORT: take the provider's batch webhooks here and poll a batch as soon as it ends (OpenAI)."
    ),
    webhook_secret: str | None = typer.Option(
        None, envvar=api.WEBHOOK_SECRET_ENV, help="The whsec_... secret those webhooks are signed with."
    ),
) -> None:
    """Run a job: documents in, validated outputs out, only failures retried. Run it again to resume."""
    if db is not None:  # a store freight cannot open is refused before anything else is read
        try:
            check_store_url(db, explicit=True)
        except UsageError as exc:
            fail_with(exc)
    labels = read_labels(expected, min_accuracy)
    try:
        opts = api.prepare(
            input,
            prompt=read_prompt(prompt, prompt_text) or "{document}",
            system=read_option_file(system, "--system"),
            schema=read_schema(schema),
            fallback_prompt=read_prompt(fallback_prompt, None, "--fallback-prompt"),
            provider=provider,
            model=model,
            base_url=base_url,
            engine=engine,
            max_tokens=max_tokens,
            max_retries=max_retries,
            mode=mode,
            deadline=deadline,
            hedge_margin=hedge_margin,
            hedge_duplicate=hedge_duplicate,
            sync_seconds=sync_seconds,
            sync_rpm=sync_rpm,
            out=out,
            id_field=id_field,
            text_field=text_field,
            batch_size=batch_size,
            prices=prices,
            price_as=price_as,
            allow_unpriced=allow_unpriced,
            on_notice=_notice,
            endpoint=endpoint,
            dimensions=dimensions,
        )
        secret = api.configure_notify(opts, notify, notify_secret)
        if check:
            _check_only(opts, db)
            return
        wake = api.listener_for(opts.provider, webhook_listen, webhook_secret)
    except FreightError as exc:
        fail_with(exc)
    if dry_run:
        from freight.cli.estimate import dry_run as forecast

        forecast(opts, db, as_json)
        return
    opts.max_cost, opts.max_cost_cancel = max_cost, max_cost_cancel
    # The lease comes first: two runs started at once must not both create, ingest and submit the same job.
    with open_store(db, create=True) as store, _hold(store, job_id_for(opts), wait) as lease:
        try:
            job = api.Job.open(opts, store=store, on_notice=_notice, lease=lease, notify_secret=secret)
        except FreightError as exc:
            fail_with(exc)
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(store.item_counts(job.job_id).items()))
        _notice(f"{'resuming' if job.resumed else 'started'} {job.job_id} ({counts})")
        for event in store.events(job.job_id, kind="note"):
            _notice(f"note: {event['data']['message']}")
        try:
            with working(f"sampling {sample_size} documents synchronously before submitting anything") as answered:
                passed = job.sample_gate(
                    on_answer=answered,
                    enabled=sample,
                    size=sample_size,
                    min_first_pass=min_first_pass,
                    labels=labels,
                    min_accuracy=min_accuracy,
                )
        except KeyboardInterrupt:
            _detached(job)
        except api.SampleGateFailed as exc:
            if as_json:
                print_json({"job": job.job_id, "state": job.state.value, "sample": exc.report})
            else:
                typer.echo(render_sample(exc.report))
            fail(str(exc), exc.exit_code)
        except FreightError as exc:
            fail_with(exc)
        if passed is not None:
            typer.echo(render_sample(passed), err=True)
        _drive(job, poll_interval, as_json, labels, wake=wake)


def resume(
    job_id: str = typer.Argument(...),
    poll_interval: float = typer.Option(5.0),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json"),
    wait: bool = typer.Option(False, "--wait", help="If another runner holds the job, wait for it instead of exit 3."),
    resubmit_unacknowledged: bool = typer.Option(
        False,
        "--resubmit-unacknowledged",
        help="Submit again a batch an earlier run sent without hearing back, when the provider cannot tell whether "
        "it got it (check its console first: its requests may be billed twice).",
    ),
    notify_secret: str | None = typer.Option(
        None, envvar=api.NOTIFY_SECRET_ENV, help="The secret the job's --notify events are signed with."
    ),
    webhook_listen: str | None = typer.Option(None, help="HOST:PORT: poll a batch as soon as its webhook arrives."),
    webhook_secret: str | None = typer.Option(None, envvar=api.WEBHOOK_SECRET_ENV, help="Those webhooks' secret."),
    max_cost: float | None = typer.Option(
        None, "--max-cost", min=0.0, help="Set (or raise) the job's cost cap, US dollars, before carrying on."
    ),
) -> None:
    """Carry on a job where it stopped, where it ran: submitted batches are polled, never submitted again."""
    with open_store(db) as store, _hold(store, job_id, wait) as lease:
        api.deliver_pending(store, job_id, notify_secret, on_notice=_notice)  # even for a job that has ended
        try:
            job = api.Job.find(job_id, store=store, on_notice=_notice, lease=lease, notify_secret=notify_secret)
            wake = api.listener_for(job.opts.provider, webhook_listen, webhook_secret)
            if max_cost is not None:
                job.set_max_cost(max_cost)
        except FreightError as exc:
            fail_with(exc)
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(store.item_counts(job_id).items()))
        _notice(f"resuming {job_id} on {job.opts.endpoint} ({counts})")
        _drive(job, poll_interval, as_json, resubmit_unacknowledged=resubmit_unacknowledged, wake=wake)


def status(
    job_id: str = typer.Argument(...), db: str | None = DbOption, as_json: bool = typer.Option(False, "--json")
) -> None:
    """A job's state, its documents and batches, and what it has cost so far."""
    with open_store(db) as store:
        job = store.get_job(job_id)
        if job is None:
            fail(f"no job {job_id!r}: `freight jobs` lists them")
        data: dict[str, Any] = {
            "job": job.model_dump(mode="json", exclude={"config"}),
            "items": store.item_counts(job_id),
            "batches": [
                {k: row[k] for k in ("provider_batch_id", "state", "n_requests", "counts", "submitted_at", "ended_at")}
                for row in store.batches(job_id)
            ],
            "endpoint": RunOptions.from_config(job.config).endpoint,
            "totals": store.totals(job_id),
            "held_by": store.job_holder(job_id),  # the worker (or `freight run`) holding the job and its batches
        }
        # The sample's spend is the job's too; a model with no price makes the whole cost unknown, never $0.
        spent = data["totals"]["cost_usd"] + sample_spend(store, job_id)
        data["cost_usd"] = round(spent, 6) if priced(store, job_id) else None
    if as_json:
        print_json(data)
        return
    typer.echo(f"{job_id}: {job.state.value}  provider {job.provider}  endpoint {data['endpoint']}  model {job.model}")
    typer.echo("documents: " + ", ".join(f"{k} {v}" for k, v in sorted(data["items"].items())))
    if (held := data["held_by"]) is not None:
        who = f"worker {held['worker']}, " if held["worker"] else "freight run, "
        typer.echo(f"held by {who}pid {held['pid']} on {held['host']} (heartbeat {held['heartbeat_at']:%H:%M:%S} UTC)")
    for b in data["batches"]:
        typer.echo(f"  batch {b['provider_batch_id'] or '(preparing)'}: {b['state']}, {b['n_requests']} requests")
    typer.echo(f"cost so far: {money(data['cost_usd'])}")


def results(
    job_id: str = typer.Argument(...),
    db: str | None = DbOption,
    out: Path | None = typer.Option(None, "--out", "-o", help="Write results.jsonl, failures.jsonl, report.json here."),
) -> None:
    """Print a job's results (one JSON line per document), or write them to --out."""
    with open_store(db) as store:
        if store.get_job(job_id) is None:
            fail(f"no job {job_id!r}: `freight jobs` lists them")
        if out is not None:
            typer.echo(render_report(build_report(store, job_id, write_to=out)))
            return
        for line in item_results(store, job_id):
            typer.echo(json.dumps(line, ensure_ascii=False))


def cancel(
    job_id: str = typer.Argument(...),
    db: str | None = DbOption,
    wait: bool = typer.Option(
        False, "--wait", help="When a runner holds the job, ask it to stop and wait for it instead of exit 3."
    ),
) -> None:
    """Cancel a job: its batches are canceled at the provider, and unfinished documents end canceled."""

    def ask_runner_to_stop() -> None:  # the holder sees `canceling` at its next pass, stops and releases the job
        with contextlib.suppress(FreightError):
            store.set_job_state(job_id, JobState.CANCELING)

    with open_store(db) as store:
        found = store.get_job(job_id)
        if found is not None and found.state in (JobState.COMPLETED, JobState.CANCELED):
            fail(
                f"job {job_id} already {found.state.value}: there is nothing left to cancel. Its results: "
                f"`freight results {job_id}`",
                ExitCode.USAGE,
            )
        with _hold(store, job_id, wait, then=ask_runner_to_stop) as lease:
            try:
                report = api.Job.find(job_id, store=store, on_notice=_notice, lease=lease).cancel()
            except FreightError as exc:
                fail(str(exc), exc.exit_code)
        typer.echo(report.render())


def register(app: typer.Typer) -> None:
    for fn in (run, resume, status, results, cancel):
        app.command(fn.__name__)(fn)
