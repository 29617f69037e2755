"""`freight run`, `resume`, `status`, `results`, `cancel`: the main job from the command line."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from freight.cli.common import DbOption, fail, open_store, print_json
from freight.domain import FreightError, JobState
from freight.providers import Provider, get_provider, provider_names
from freight.runner.job import RunOptions, decide_mode, job_id_for, open_job, resume_job
from freight.runner.loop import Runner, Snapshot
from freight.runner.report import build_report, item_results, render_report
from freight.store import JobLease, Store, freight_home

KEY_ENV = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
}
DEFAULT_LOCAL_MODEL = "smollm2-135m"


def _read(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{what} {path}: {exc.strerror}")


def _schema(path: Path | None) -> dict[str, Any] | None:
    text = _read(path, "--schema")
    if text is None:
        return None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path}:{exc.lineno}: the schema is not valid JSON ({exc.msg})")
    if not isinstance(schema, dict):
        fail(f"{path}: a JSON Schema must be an object")
    return schema


@contextlib.contextmanager
def provider_for(opts: RunOptions, engine: str) -> Iterator[Provider]:
    """The provider adapter for a run. With no base URL and no API key in the environment, freight starts its own
    server (`freight serve`, with the embedded engine) on loopback for the run, its state kept in FREIGHT_HOME so a
    resumed run finds its batches again."""
    if opts.base_url or os.environ.get(KEY_ENV.get(opts.provider, "")):
        yield get_provider(opts.provider, base_url=opts.base_url)
        return
    from freight.server.testing import LocalServer

    home = freight_home()
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(16)
    with LocalServer(home / f"serve-{engine}.db", engine=engine, time_scale=0.001, api_key=key, subprocess=True) as srv:
        base = srv.url_for(opts.provider) if opts.provider in KEY_ENV else srv.base_url
        yield get_provider(opts.provider, base_url=base, api_key=key)


def _printer(json_mode: bool) -> Any:
    last: list[Any] = [None, 0.0]

    def show(s: Snapshot) -> None:
        for note in s.notes:  # each note once, as it happens
            typer.echo(f"note: {note}", err=True)
        key = (tuple(sorted(s.items.items())), tuple(s.batches))
        if json_mode or (key == last[0] and time.monotonic() - last[1] < 30):
            return
        last[0], last[1] = key, time.monotonic()
        done = s.items.get("succeeded", 0)
        failed = s.items.get("failed", 0) + s.items.get("canceled", 0)
        pending = s.items.get("pending", 0) + s.items.get("in_flight", 0)
        states = ", ".join(f"{b[1]} {b[2]}" for b in s.batches[-3:]) or "none yet"
        typer.echo(
            f"[{s.elapsed:6.0f}s] done {done}  failed {failed}  pending {pending}  |  batches: "
            f"{len(s.batches)} ({states})  |  cost ${s.cost_usd:.4f}",
            err=True,
        )

    return show


def _hold(store: Store, job_id: str, wait: bool, then: Any = None) -> JobLease:
    """The job's lease, taken before anything reads or writes the job (exit 3 when another runner holds it).
    `then`: what to do once, when the job turns out to be held and we wait."""

    def waiting(holder: Any) -> None:
        typer.echo(f"waiting for {holder.describe()} to finish with {job_id}", err=True)
        if then is not None:
            then()

    try:
        return JobLease(store, job_id, wait=wait, on_wait=waiting).acquire()
    except FreightError as exc:
        fail(str(exc), exc.exit_code)


def _drive(
    store: Store,
    job_id: str,
    opts: RunOptions,
    engine: str,
    poll: float,
    batch_size: int | None,
    as_json: bool,
    lease: JobLease | None = None,
    resubmit_unacknowledged: bool = False,
) -> None:
    out = Path(opts.out) if opts.out else Path("freight-out") / job_id
    try:
        with provider_for(opts, engine) as provider:
            Runner(
                store,
                provider,
                job_id,
                opts,
                poll_interval=poll,
                batch_size=batch_size,
                on_progress=_printer(as_json),
                lease=lease,
                resubmit_unacknowledged=resubmit_unacknowledged,
            ).run()
    except KeyboardInterrupt:
        typer.echo(
            f"\ndetached from {job_id}: submitted batches keep running. Resume with: freight resume {job_id}", err=True
        )
        raise typer.Exit(130) from None
    except FreightError as exc:
        fail(f"{exc}\nthe job is saved: fix the cause and run `freight resume {job_id}`", exc.exit_code)
    report = build_report(store, job_id, write_to=out)
    if as_json:
        print_json(report)
    else:
        typer.echo(render_report(report))
        typer.echo(f"outputs: {out}/results.jsonl, failures.jsonl, report.json")


def run(
    input: Path = typer.Argument(
        ...,
        help="A folder of .txt/.md/.json files, a JSONL/CSV of documents, or a JSONL file of provider batch requests.",
    ),
    prompt: Path | None = typer.Option(None, help="Prompt template; {document} is replaced by the document."),
    system: Path | None = typer.Option(None, help="System prompt file."),
    schema: Path | None = typer.Option(None, help="JSON Schema the output must satisfy (asks for JSON)."),
    fallback_prompt: Path | None = typer.Option(None, help="Simpler prompt for documents that keep failing."),
    provider: str = typer.Option("anthropic", help="anthropic | openai"),
    model: str | None = typer.Option(None, help="Model name (default: the embedded local model)."),
    base_url: str | None = typer.Option(None, help="Provider API base URL (e.g. a freight serve)."),
    max_tokens: int = typer.Option(1024, min=1),
    max_retries: int = typer.Option(2, min=0, help="Retries per document."),
    mode: str = typer.Option("batch", help="batch | sync | auto (route by freight.plan)."),
    deadline: str | None = typer.Option(
        None, help="When the results are needed (ISO 8601); with --mode auto, one inside the batch window runs sync."
    ),
    out: Path | None = typer.Option(None, help="Output folder (default freight-out/JOB)."),
    engine: str = typer.Option("local", help="Engine of the embedded server, when one is started."),
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
    wait: bool = typer.Option(False, "--wait", help="If another runner holds the job, wait for it instead of exit 3."),
) -> None:
    """Run a job: documents in, validated outputs out, only failures retried. Run it again to resume."""
    if mode not in ("batch", "sync", "auto"):
        fail(f"--mode {mode!r}: use batch, sync or auto")
    if provider not in provider_names():
        fail(f"unknown provider {provider!r}; known providers: {', '.join(provider_names())}")
    opts = RunOptions(
        input=str(input.resolve()),
        provider=provider,
        model=model or DEFAULT_LOCAL_MODEL,
        prompt=_read(prompt, "--prompt") or "{document}",
        system=_read(system, "--system"),
        schema=_schema(schema),
        fallback_prompt=_read(fallback_prompt, "--fallback-prompt"),
        max_tokens=max_tokens,
        max_retries=max_retries,
        mode=mode,
        base_url=base_url,
        out=str(out) if out else None,
        id_field=id_field,
        text_field=text_field,
        deadline=deadline,
        extra={"batch_size": batch_size},
    )
    try:
        if mode == "auto":
            opts.mode = _route(opts)
        job_id = job_id_for(opts)
    except FreightError as exc:
        fail(str(exc), exc.exit_code)
    # The lease comes first: two runs started at once must not both create, ingest and submit the same job.
    with open_store(db) as store, _hold(store, job_id, wait) as lease:
        try:
            job, resumed = open_job(store, opts)
        except FreightError as exc:
            fail(str(exc), exc.exit_code)
        typer.echo(f"{'resuming' if resumed else 'started'} {job.job_id} ({store.item_counts(job.job_id)})", err=True)
        # --- sample gate (issue 8): exits non-zero, the job stopped and nothing submitted, when the sample fails ---
        from freight.cli.sample import sample_gate

        sample_gate(
            store,
            job.job_id,
            opts,
            engine,
            enabled=sample,
            size=sample_size,
            min_first_pass=min_first_pass,
            as_json=as_json,
        )
        _drive(store, job.job_id, opts, engine, poll_interval, batch_size, as_json, lease)


def _route(opts: RunOptions) -> str:
    decision = decide_mode(opts, datetime.now(UTC))
    for reason in decision.reasons:
        typer.echo(f"route: {decision.mode.value}: {reason.text}", err=True)
    return "batch" if decision.is_batch else "sync"


def resume(
    job_id: str = typer.Argument(...),
    engine: str = typer.Option("local", help="Engine of the embedded server, when one is started."),
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
) -> None:
    """Carry on a job where it stopped: submitted batches are polled, never submitted again."""
    with open_store(db) as store, _hold(store, job_id, wait) as lease:
        try:
            _, opts = resume_job(store, job_id)
        except FreightError as exc:
            fail(str(exc), exc.exit_code)
        _drive(
            store, job_id, opts, engine, poll_interval, opts.extra.get("batch_size"), as_json, lease,
            resubmit_unacknowledged,
        )  # fmt: skip


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
            "totals": store.totals(job_id),
        }
    if as_json:
        print_json(data)
        return
    typer.echo(f"{job_id}: {job.state.value}  provider {job.provider}  model {job.model}")
    typer.echo("documents: " + ", ".join(f"{k} {v}" for k, v in sorted(data["items"].items())))
    for b in data["batches"]:
        typer.echo(f"  batch {b['provider_batch_id'] or '(preparing)'}: {b['state']}, {b['n_requests']} requests")
    typer.echo(f"cost so far: ${data['totals']['cost_usd']:.4f}")


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


def cancel(
    job_id: str = typer.Argument(...),
    engine: str = typer.Option("local"),
    db: str | None = DbOption,
    wait: bool = typer.Option(False, "--wait", help="When a runner holds the job, wait for it instead of exit 3."),
) -> None:
    """Cancel a job: its batches are canceled at the provider, and unfinished documents end canceled."""

    def ask_runner_to_stop() -> None:  # the holder sees `canceling` at its next pass, stops and releases the job
        with contextlib.suppress(FreightError):
            store.set_job_state(job_id, JobState.CANCELING)

    with open_store(db) as store, _hold(store, job_id, wait, then=ask_runner_to_stop) as lease:
        try:
            job, opts = resume_job(store, job_id)
            if job.state is not JobState.CANCELING:
                store.set_job_state(job_id, JobState.CANCELING)
            with provider_for(opts, engine) as provider:
                runner = Runner(store, provider, job_id, opts, poll_interval=1.0, lease=lease)
                runner.cancel()
        except FreightError as exc:
            fail(str(exc), exc.exit_code)
        typer.echo(render_report(build_report(store, job_id)))


def register(app: typer.Typer) -> None:
    for fn in (run, resume, status, results, cancel):
        app.command(fn.__name__)(fn)
