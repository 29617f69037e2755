"""`freight sample`, and the same step as the gate at the start of `freight run`.

The gate's choice: `freight run` creates (ingests) the job first, then samples; a sample below --min-first-pass moves
the job to `stopped` before anything is submitted, so `freight jobs` shows it and its log says why. The same command
with a fixed prompt is a different job; the same command again samples again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from freight.cli.common import DbOption, fail, open_store, print_json
from freight.cli.run import DEFAULT_LOCAL_MODEL, _read, _schema, provider_for
from freight.domain import FreightError, JobState
from freight.runner.job import RunOptions
from freight.runner.sample import (
    DEFAULT_MIN_FIRST_PASS,
    DEFAULT_SIZE,
    GATE_THRESHOLD_DOCUMENTS,
    SampleSettings,
    gate_lines,
    load_samples,
    run_sample,
    save_sample,
)
from freight.store import Store


def sample(
    input: Path = typer.Argument(..., help="The input `freight run` would take."),
    prompt: Path | None = typer.Option(None, help="Prompt template; {document} is replaced by the document."),
    system: Path | None = typer.Option(None, help="System prompt file."),
    schema: Path | None = typer.Option(None, help="JSON Schema the output must satisfy (asks for JSON)."),
    size: int = typer.Option(DEFAULT_SIZE, min=1, help="Documents in the sample."),
    seed: int = typer.Option(0, help="The same seed picks the same documents."),
    min_first_pass: float = typer.Option(
        DEFAULT_MIN_FIRST_PASS, min=0.0, max=1.0, help="The gate: exit 1 when the first-pass rate is below it."
    ),
    compare: bool = typer.Option(False, "--compare", help="Show earlier sample runs of INPUT side by side."),
    runs: str | None = typer.Option(None, help="With --compare: sample ids to show, e.g. 3,5 (default: the last 2)."),
    last: int = typer.Option(2, min=1, help="With --compare and no --runs: how many recent runs."),
    provider: str = typer.Option("anthropic", help="anthropic | openai"),
    model: str | None = typer.Option(None, help="Model name (default: the embedded local model)."),
    base_url: str | None = typer.Option(None, help="Provider API base URL (e.g. a freight serve)."),
    max_tokens: int = typer.Option(1024, min=1),
    mode: str = typer.Option("batch", help="The mode the full run will use (prices the retries): batch | sync."),
    engine: str = typer.Option("local", help="Engine of the embedded server, when one is started."),
    id_field: str | None = typer.Option(None, help="Id column of a JSONL/CSV input."),
    text_field: str | None = typer.Option(None, help="Text column of a JSONL/CSV input."),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run a representative sample synchronously and say whether the prompt is ready for the whole input."""
    if mode not in ("batch", "sync"):
        fail(f"--mode {mode!r}: use batch or sync (the mode of the full run, which prices its retries)")
    opts = RunOptions(
        input=str(input.resolve()),
        provider=provider,
        model=model or DEFAULT_LOCAL_MODEL,
        prompt=_read(prompt, "--prompt") or "{document}",
        system=_read(system, "--system"),
        schema=_schema(schema),
        max_tokens=max_tokens,
        mode=mode,
        base_url=base_url,
        id_field=id_field,
        text_field=text_field,
    )
    with open_store(db) as store:
        if compare:
            _compare(store, opts, runs, last, as_json)
            return
        if prompt is None:
            fail("--prompt FILE is required (or --compare to show earlier sample runs)")
        settings = SampleSettings(size=size, seed=seed, min_first_pass=min_first_pass)
        report = _sample(store, opts, engine, settings)
    if as_json:
        print_json(report)
    else:
        typer.echo(render_sample(report))
    if not report["passed"]:
        raise typer.Exit(1)


def _sample(store: Store, opts: RunOptions, engine: str, settings: SampleSettings) -> dict[str, Any]:
    try:
        with provider_for(opts, engine) as provider:
            report = run_sample(provider, opts, settings)
    except (FreightError, ValueError) as exc:
        fail(str(exc))
    report["sample_id"] = save_sample(store, opts, report)
    return report


def sample_gate(
    store: Store,
    job_id: str,
    opts: RunOptions,
    engine: str,
    *,
    enabled: bool | None,
    size: int,
    min_first_pass: float,
    as_json: bool,
) -> None:
    """Before `freight run` submits anything: sample a job not started yet, and stop it when the first-pass rate is
    below `min_first_pass`. `enabled` None samples inputs over 50 documents; True always; False never. A job already
    running (resumed) is not sampled again."""
    job = store.get_job(job_id)
    assert job is not None
    if enabled is False or job.state not in (JobState.CREATED, JobState.SAMPLING, JobState.STOPPED):
        return
    documents = sum(store.item_counts(job_id).values())
    if enabled is None and documents <= GATE_THRESHOLD_DOCUMENTS:
        return
    if job.state is not JobState.SAMPLING:
        store.set_job_state(job_id, JobState.SAMPLING)
    typer.echo(f"sampling {size} of {documents} documents first (--no-sample skips this)", err=True)
    report = _sample(store, opts, engine, SampleSettings(size=size, min_first_pass=min_first_pass))
    store.log(
        job_id, "sample.gate", sample_id=report["sample_id"], rate=report["first_pass_rate"], passed=report["passed"]
    )
    if report["passed"]:
        typer.echo(render_sample(report), err=True)
        return
    store.set_job_state(job_id, JobState.STOPPED)
    if as_json:
        print_json({"job": job_id, "state": JobState.STOPPED.value, "sample": report})
    else:
        typer.echo(render_sample(report))
    fail(
        f"the sample's projected final success {report['final_rate']:.0%} (first pass, plus the retries the run "
        f"makes itself) is below --min-first-pass {min_first_pass:.0%}: the prompt fails on its own, not by chance; "
        f"nothing was submitted and job {job_id} is stopped. Fix the prompt (the failures are "
        f"listed above), check it with `freight sample {opts.input} --prompt FILE`, then run again; "
        "--min-first-pass or --no-sample overrides the gate"
    )


# --- rendering ------------------------------------------------------------------------------------------------------


def render_sample(report: dict[str, Any]) -> str:
    rate = report["first_pass_rate"]
    lines = [
        f"sample #{report.get('sample_id', '?')}: {report['size']} of {report['documents']:,} documents "
        f"(seed {report['seed']}), prompt version {report['prompt_version']}, model {report['model']}",
    ]
    for r in report["results"]:
        mark = "ok  " if r["ok"] else "FAIL"
        lines.append(f"  {mark} {r['doc_id']}  {r['chars']:,} chars  {r['signature']}  <- {'; '.join(r['why'])}")
    for gap in report["uncovered"]:
        lines.append(f"  not represented (raise --size): {gap}")
    lines += gate_lines(report)
    lines += _failures(report["failures"])
    retries = report["retries"]
    lines.append(
        f"projected for all {report['documents']:,} documents at {rate:.0%}: about {retries['retries']:,} retries, "
        f"{retries['total_requests']:,} requests in all"
    )
    c = report["cost"]
    if c["priced"]:
        per = c["per_document"]
        lines.append(
            f"full run, estimated from the sample's usage ({per['input_tokens']:,} in / {per['output_tokens']:,} out "
            f"tokens a request, retries included): ${c['sync_usd']:,.4f} synchronous, ${c['batch_usd']:,.4f} batch"
        )
    else:
        lines.append(f"full run cost: unknown - {c['note']}")
    t = report["tokens"]
    lines.append(f"the sample used {t['input_tokens']:,} input and {t['output_tokens']:,} output tokens")
    return "\n".join(lines)


# What a failure of the sample means for the prompt, by kind: the next thing to try.
HINTS = {
    "validation_failed": "make the prompt ask for exactly the JSON the schema describes",
    "truncated": "the run retries it with max_tokens doubled (raise_max_tokens); a higher --max-tokens saves the retry",
    "context_overflow": "too long for the model: the full run splits it into chunks (one more request each)",
    "invalid_request": "the provider refused the request as built: the batch would refuse it too",
}


def _failures(failures: list[dict[str, Any]]) -> list[str]:
    """Each failed document under its reason; documents failing the same way are listed together."""
    groups: dict[tuple[str, str], list[str]] = {}
    for f in failures:
        who = f["doc_id"] if f["custom_id"] == f["doc_id"] else f"{f['doc_id']} (custom_id {f['custom_id']})"
        groups.setdefault((f["kind"], f["message"]), []).append(who)
    lines = [f"failed ({len(failures)}):"] if failures else []
    for (kind, message), docs in groups.items():
        hint = f" - {HINTS[kind]}" if kind in HINTS else ""
        lines.append(f"  {kind}: {message}{hint}")
        lines.append(f"    {', '.join(docs)}")
    return lines


def _compare(store: Store, opts: RunOptions, runs: str | None, last: int, as_json: bool) -> None:
    try:
        ids = [int(x) for x in runs.split(",") if x.strip()] if runs else None
    except ValueError:
        fail(f"--runs {runs!r}: give sample ids separated by commas, e.g. 3,5")
    found = load_samples(store, opts, ids=ids, last=last)
    if not found:
        fail(f"no sample runs of {opts.input} in this store: run `freight sample {opts.input} --prompt FILE` first")
    if ids and len(found) < len(ids):
        missing = sorted(set(ids) - {r["sample_id"] for r in found})
        fail(f"sample(s) {', '.join(map(str, missing))} are not runs of {opts.input}")
    if as_json:
        print_json(found)
        return
    typer.echo(render_compare(found))


def render_compare(runs: list[dict[str, Any]]) -> str:
    """Prompt versions as columns; rows are the summary, then each document the runs share (or not)."""
    head = [f"#{r['sample_id']} {r['prompt_version']}" for r in runs]
    rows: list[list[str]] = [
        ["", *head],
        ["model", *(r["model"] for r in runs)],
        ["first-pass", *(f"{r['first_pass_rate']:.0%}" for r in runs)],
        ["failures", *(str(len(r["failures"])) for r in runs)],
        ["tokens in", *(f"{r['tokens']['input_tokens']:,}" for r in runs)],
        ["tokens out", *(f"{r['tokens']['output_tokens']:,}" for r in runs)],
        ["gate", *("pass" if r["passed"] else "stop" for r in runs)],
    ]
    order: list[str] = []
    by_run: list[dict[str, dict[str, Any]]] = []
    for r in runs:
        by_run.append({x["doc_id"]: x for x in r["results"]})
        order += [x["doc_id"] for x in r["results"] if x["doc_id"] not in order]
    for doc_id in order:
        cells = []
        for results in by_run:
            x = results.get(doc_id)
            cells.append("-" if x is None else "ok" if x["ok"] else f"FAIL {x['failure']['kind']}")
        rows.append([doc_id, *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if len({tuple(sorted(res)) for res in by_run}) > 1:
        lines.append("note: the runs sampled different documents (another --seed or --size, or the input changed)")
    for r in runs:
        if r["failures"]:
            lines.append(f"#{r['sample_id']} {r['prompt_version']} " + "\n".join(_failures(r["failures"])))
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
