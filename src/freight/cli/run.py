"""`freight run`, `resume`, `status`, `results`, `cancel`: the main job from the command line.

A thin skin over `freight.api`: parse the flags, call the library, render what it returns. Every decision of a run
(where it goes, the embedded model, pricing, the sample gate) is made there, so a notebook makes it the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from freight import api
from freight.cli.common import DbOption, fail, open_store, print_json, read_option_file, read_schema
from freight.cli.sample_view import render_sample
from freight.domain import ExitCode, FreightError
from freight.runner.job import RunOptions
from freight.runner.loop import Snapshot
from freight.runner.report import build_report, item_results, money, priced, render_report, sample_spend


def _printer(json_mode: bool, priced: Callable[[], bool], sample: float = 0.0) -> Callable[[Snapshot], None]:
    """Progress lines on stderr; the cost includes what the sample spent, so it ends where the report does."""
    last: list[Any] = [None, 0.0]

    def show(s: Snapshot) -> None:
        key = (tuple(sorted(s.items.items())), tuple(s.batches))
        if json_mode or (key == last[0] and time.monotonic() - last[1] < 30):
            return
        last[0], last[1] = key, time.monotonic()
        done = s.items.get("succeeded", 0)
        failed = s.items.get("failed", 0) + s.items.get("canceled", 0)
        pending = s.items.get("pending", 0) + s.items.get("in_flight", 0)
        states = ", ".join(f"{b[1]} {b[2]}" for b in s.batches[-3:]) or "none yet"
        cost = f"${s.cost_usd + sample:.4f}" if priced() else "unknown"
        typer.echo(
            f"[{s.elapsed:6.0f}s] done {done}  failed {failed}  pending {pending}  |  batches: "
            f"{len(s.batches)} ({states})  |  cost {cost}",
            err=True,
        )

    return show


def _notice(message: str) -> None:
    typer.echo(message, err=True)


def _drive(job: api.Job, poll: float, as_json: bool) -> None:
    try:
        printer = _printer(as_json, lambda: job.priced, sample_spend(job.store, job.job_id))
        report = job.run(on_progress=printer, poll_interval=poll)
    except KeyboardInterrupt:
        typer.echo(
            f"\ndetached from {job.job_id}: submitted batches keep running. Resume with: freight resume {job.job_id}",
            err=True,
        )
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except FreightError as exc:
        fail(f"{exc}\nthe job is saved: fix the cause and run `freight resume {job.job_id}`", exc.exit_code)
    if as_json:
        print_json(report.data)
    else:
        typer.echo(report.render())
        typer.echo(f"outputs: {report.out}/results.jsonl, failures.jsonl, report.json")


def run(
    input: Path = typer.Argument(
        ...,
        help="A folder of .txt/.md/.json files, a JSONL/CSV of documents, or a JSONL file of provider batch requests.",
    ),
    prompt: Path | None = typer.Option(None, help="Prompt template; {document} is replaced by the document."),
    system: Path | None = typer.Option(None, help="System prompt file."),
    schema: Path | None = typer.Option(None, help="JSON Schema the output must satisfy (asks for JSON)."),
    fallback_prompt: Path | None = typer.Option(None, help="Simpler prompt for documents that keep failing."),
    provider: str = typer.Option(
        "anthropic", help="anthropic | openai | gemini | azure | local (the embedded model) | a plugin's name"
    ),
    model: str | None = typer.Option(
        None, help="Model name: required with a key or --base-url; on the embedded model, its own (smollm2-135m)."
    ),
    base_url: str | None = typer.Option(None, help="Provider API base URL (e.g. a freight serve)."),
    max_tokens: int = typer.Option(1024, min=1),
    max_retries: int = typer.Option(2, min=0, help="Retries per document."),
    mode: str = typer.Option("batch", help="batch | sync | auto (route by freight.plan)."),
    deadline: str | None = typer.Option(
        None, help="When the results are needed (ISO 8601); with --mode auto, one inside the batch window runs sync."
    ),
    out: Path | None = typer.Option(None, help="Output folder (default freight-out/JOB)."),
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
) -> None:
    """Run a job: documents in, validated outputs out, only failures retried. Run it again to resume."""
    with open_store(db) as store:
        try:
            opts = api.prepare(
                input,
                prompt=read_option_file(prompt, "--prompt") or "{document}",
                system=read_option_file(system, "--system"),
                schema=read_schema(schema),
                fallback_prompt=read_option_file(fallback_prompt, "--fallback-prompt"),
                provider=provider,
                model=model,
                base_url=base_url,
                engine=engine,
                max_tokens=max_tokens,
                max_retries=max_retries,
                mode=mode,
                deadline=deadline,
                out=out,
                id_field=id_field,
                text_field=text_field,
                batch_size=batch_size,
                prices=prices,
                price_as=price_as,
                allow_unpriced=allow_unpriced,
                on_notice=_notice,
            )
            job = api.Job.open(opts, store=store, on_notice=_notice)
        except FreightError as exc:
            fail(str(exc), exc.exit_code)
        _notice(f"{'resuming' if job.resumed else 'started'} {job.job_id} ({store.item_counts(job.job_id)})")
        try:
            passed = job.sample_gate(enabled=sample, size=sample_size, min_first_pass=min_first_pass)
        except api.SampleGateFailed as exc:
            if as_json:
                print_json({"job": job.job_id, "state": job.state.value, "sample": exc.report})
            else:
                typer.echo(render_sample(exc.report))
            fail(str(exc), exc.exit_code)
        except FreightError as exc:
            fail(str(exc), exc.exit_code)
        if passed is not None:
            typer.echo(render_sample(passed), err=True)
        _drive(job, poll_interval, as_json)


def resume(
    job_id: str = typer.Argument(...),
    poll_interval: float = typer.Option(5.0),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Carry on a job where it stopped, where it ran: submitted batches are polled, never submitted again."""
    with open_store(db) as store:
        try:
            job = api.Job.find(job_id, store=store, on_notice=_notice)
        except FreightError as exc:
            fail(str(exc), exc.exit_code)
        _drive(job, poll_interval, as_json)


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
        }
        # The sample's spend is the job's too; a model with no price makes the whole cost unknown, never $0.
        spent = data["totals"]["cost_usd"] + sample_spend(store, job_id)
        data["cost_usd"] = round(spent, 6) if priced(store, job_id) else None
    if as_json:
        print_json(data)
        return
    typer.echo(f"{job_id}: {job.state.value}  provider {job.provider}  endpoint {data['endpoint']}  model {job.model}")
    typer.echo("documents: " + ", ".join(f"{k} {v}" for k, v in sorted(data["items"].items())))
    for b in data["batches"]:
        typer.echo(f"  batch {b['provider_batch_id'] or '(preparing)'}: {b['state']}, {b['n_requests']} requests")
    typer.echo(f"cost so far: {money(data['cost_usd'])}")


def results(
    job_id: str = typer.Argument(...),
    db: str | None = DbOption,
    out: Path | None = typer.Option(None, help="Write results.jsonl, failures.jsonl, report.json here."),
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


def cancel(job_id: str = typer.Argument(...), db: str | None = DbOption) -> None:
    """Cancel a job: its batches are canceled at the provider, and unfinished documents end canceled."""
    with open_store(db) as store:
        try:
            report = api.Job.find(job_id, store=store, on_notice=_notice).cancel()
        except FreightError as exc:
            fail(str(exc), exc.exit_code)
        typer.echo(report.render())


def register(app: typer.Typer) -> None:
    for fn in (run, resume, status, results, cancel):
        app.command(fn.__name__)(fn)
