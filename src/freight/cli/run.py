"""`freight run`: the main job from the command line (a job already made: cli/job_cmds.py).

A thin skin over `freight.api`: parse the flags, call the library, render what it returns. Every decision of a run
(where it goes, the embedded model, pricing, the sample gate) is made there, so a notebook makes it the same way.
"""

from __future__ import annotations

from pathlib import Path

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
from freight.cli.drive import detached, drive, hold_job, notice
from freight.cli.follow import follow_on_workers, on_the_queue, ready_for_workers, workers_can_take
from freight.cli.progress import working
from freight.cli.sample_view import render_sample
from freight.domain import FreightError, UsageError
from freight.runner.checks import check_store_url
from freight.runner.inputs import input_kind, read_input
from freight.runner.job import RunOptions, job_id_for
from freight.target import embedded_kept


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
    # --- many workers (issue 16; freight.cli.follow) ---
    follow: bool = typer.Option(
        False,
        "--follow",
        help="On a PostgreSQL store with live workers: hand the job to them and follow it here (Ctrl-C detaches). "
        "Anywhere else the job runs here, as without it.",
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
            on_notice=notice,
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
    on_workers = follow and workers_can_take(opts, db, webhook_listen)
    if on_workers and on_the_queue(db, job_id_for(opts)):  # the workers' already: follow it, take nothing
        follow_on_workers(db, job_id_for(opts), opts, as_json, labels, poll_interval)
        return
    # The lease comes first: two runs started at once must not both create, ingest and submit the same job.
    # One embedded server (when the run is on the embedded model) for the sample and the run that follows it.
    with open_store(db, create=True) as store, hold_job(store, job_id_for(opts), wait) as lease, embedded_kept():
        try:
            job = api.Job.open(opts, store=store, on_notice=notice, lease=lease, notify_secret=secret)
        except FreightError as exc:
            fail_with(exc)
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(store.item_counts(job.job_id).items()))
        notice(f"{'resuming' if job.resumed else 'started'} {job.job_id} ({counts})")
        for event in store.events(job.job_id, kind="note"):
            notice(f"note: {event['data']['message']}")
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
            detached(job)
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
        if on_workers:
            ready_for_workers(store, job.job_id)
        else:
            drive(job, poll_interval, as_json, labels, wake=wake)
    if on_workers:  # the lease released: a worker may take the job now
        follow_on_workers(db, job.job_id, opts, as_json, labels, poll_interval)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
