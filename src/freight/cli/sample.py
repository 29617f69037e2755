"""`freight sample`: run a representative sample synchronously and say whether the prompt is ready.

The same step is the gate at the start of `freight run`; both are `freight.api` calls (`api.sample`,
`Job.sample_gate`), and both render through `freight.cli.sample_view`.
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
from freight.cli.progress import working
from freight.cli.sample_view import render_compare, render_sample
from freight.domain import ExitCode, FreightError
from freight.runner.accuracy import Labels, score
from freight.runner.job import RunOptions
from freight.runner.sample import DEFAULT_MIN_FIRST_PASS, DEFAULT_SIZE, load_samples
from freight.store import Store


def sample(
    input: Path = typer.Argument(..., help="The input `freight run` would take."),
    prompt: Path | None = typer.Option(
        None, "--prompt", "-p", help="Prompt template file; {document} is replaced by the document."
    ),
    prompt_text: str | None = typer.Option(None, "--prompt-text", help="The prompt template given inline."),
    system: Path | None = typer.Option(None, help="System prompt file."),
    schema: Path | None = typer.Option(
        None, "--schema", "-s", help="JSON Schema the output must satisfy (asks for JSON)."
    ),
    size: int = typer.Option(DEFAULT_SIZE, min=1, help="Documents in the sample."),
    seed: int = typer.Option(0, help="The same seed picks the same documents."),
    min_first_pass: float = typer.Option(
        DEFAULT_MIN_FIRST_PASS, min=0.0, max=1.0, help="The gate: exit 1 when the first-pass rate is below it."
    ),
    compare: bool = typer.Option(False, "--compare", help="Show earlier sample runs of INPUT side by side."),
    runs: str | None = typer.Option(None, help="With --compare: sample ids to show, e.g. 3,5 (default: the last 2)."),
    last: int = typer.Option(2, min=1, help="With --compare and no --runs: how many recent runs."),
    provider: str = typer.Option("anthropic", help=PROVIDER_HELP),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model name: required with a key or --base-url; on the embedded model, its own (smollm2-135m).",
    ),
    base_url: str | None = typer.Option(None, help="Provider API base URL (e.g. a freight serve)."),
    max_tokens: int = typer.Option(1024, min=1),
    mode: str = typer.Option("batch", help="The mode the full run will use (prices the retries): batch | sync."),
    engine: str = typer.Option("local", help="Engine of the embedded server, when the run is on it: local | scripted."),
    id_field: str | None = typer.Option(None, help="Id column of a JSONL/CSV input."),
    text_field: str | None = typer.Option(None, help="Text column of a JSONL/CSV input."),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    prices: Path | None = typer.Option(None, help="A price table (the shape of freight/plan/prices.yaml) over ours."),
    price_as: str | None = typer.Option(None, help="Price models the table does not list as this listed model."),
    allow_unpriced: bool = typer.Option(False, "--allow-unpriced", help="Sample a model with no price anyway."),
    expected: Path | None = typer.Option(
        None, help="JSONL of labelled outputs ({id, output}): field accuracy per field, document and prompt version."
    ),
    min_accuracy: float | None = typer.Option(
        None, min=0.0, max=1.0, help="With --expected: the gate also needs this field accuracy (exit 1 below it)."
    ),
) -> None:
    """Run a representative sample synchronously and say whether the prompt is ready for the whole input."""
    if mode not in ("batch", "sync"):
        fail(f"--mode {mode!r}: use batch or sync (the mode of the full run, which prices its retries)", ExitCode.USAGE)
    labels = read_labels(expected, min_accuracy)
    if compare:
        with open_store(db) as store:
            # Earlier runs are found by their input alone: nothing is sent, so no provider is resolved.
            opts = RunOptions(input=str(input.resolve()), provider=provider, model="")
            _compare(store, opts, runs, last, as_json, labels)
        return
    if prompt is None and prompt_text is None:
        fail("-p/--prompt FILE or --prompt-text is required (or --compare to show earlier sample runs)", ExitCode.USAGE)
    template = read_prompt(prompt, prompt_text)
    system_text, schema_obj = read_option_file(system, "--system"), read_schema(schema)
    with open_store(db, create=True) as store:
        try:
            with working(f"sampling {size} documents synchronously") as answered:
                report = api.sample(
                    input,
                    on_answer=answered,
                    size=size,
                    seed=seed,
                    min_first_pass=min_first_pass,
                    store=store,
                    on_notice=lambda message: typer.echo(message, err=True),
                    labels=labels,
                    min_accuracy=min_accuracy,
                    prompt=template or "{document}",
                    system=system_text,
                    schema=schema_obj,
                    provider=provider,
                    model=model,
                    base_url=base_url,
                    engine=engine,
                    max_tokens=max_tokens,
                    mode=mode,
                    id_field=id_field,
                    text_field=text_field,
                    prices=prices,
                    price_as=price_as,
                    allow_unpriced=allow_unpriced,
                )
        except FreightError as exc:
            fail_with(exc)
    if as_json:
        print_json(report)
    else:
        typer.echo(render_sample(report))
    if not report["passed"]:
        raise typer.Exit(ExitCode.FAILED)


def _compare(
    store: Store, opts: RunOptions, runs: str | None, last: int, as_json: bool, labels: Labels | None = None
) -> None:
    try:
        ids = [int(x) for x in runs.split(",") if x.strip()] if runs else None
    except ValueError:
        fail(f"--runs {runs!r}: give sample ids separated by commas, e.g. 3,5", ExitCode.USAGE)
    found = load_samples(store, opts, ids=ids, last=last)
    if ids and len(found) < len(ids):
        missing = sorted(set(ids) - {r["sample_id"] for r in found})
        known = [str(r["sample_id"]) for r in load_samples(store, opts, last=1_000_000)]
        fail(
            f"--runs: no sample run {', '.join(f'#{m}' for m in missing)} of {opts.input} in this store; its runs "
            f"are {', '.join(f'#{k}' for k in known) or 'none yet'} (`freight sample {opts.input} --compare` shows "
            "the last two)",
            ExitCode.USAGE,
        )
    if not found:
        fail(
            f"no sample runs of {opts.input} in this store: run `freight sample {opts.input} -p FILE` first",
            ExitCode.USAGE,
        )
    if labels is not None:
        # Scored now, from the outputs each run kept: the same labels judge every prompt version alike.
        for r in found:
            r["accuracy"] = score(((x["doc_id"], x.get("output")) for x in r["results"]), labels)
    if as_json:
        print_json(found)
        return
    typer.echo(render_compare(found))


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
