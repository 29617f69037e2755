"""`freight sample`: run a representative sample synchronously and say whether the prompt is ready.

The same step is the gate at the start of `freight run`; both are `freight.api` calls (`api.sample`,
`Job.sample_gate`), and both render through `freight.cli.sample_view`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from freight import api
from freight.cli.common import DbOption, fail, open_store, print_json, read_option_file, read_schema
from freight.cli.sample_view import render_compare, render_sample
from freight.domain import ExitCode, FreightError
from freight.runner.job import RunOptions
from freight.runner.sample import DEFAULT_MIN_FIRST_PASS, DEFAULT_SIZE, load_samples
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
    provider: str = typer.Option(
        "anthropic", help="anthropic | openai | gemini | azure | local (the embedded model) | a plugin's name"
    ),
    model: str | None = typer.Option(
        None, help="Model name: required with a key or --base-url; on the embedded model, its own (smollm2-135m)."
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
) -> None:
    """Run a representative sample synchronously and say whether the prompt is ready for the whole input."""
    if mode not in ("batch", "sync"):
        fail(f"--mode {mode!r}: use batch or sync (the mode of the full run, which prices its retries)", ExitCode.USAGE)
    with open_store(db) as store:
        if compare:
            # Earlier runs are found by their input alone: nothing is sent, so no provider is resolved.
            _compare(store, RunOptions(input=str(input.resolve()), provider=provider, model=""), runs, last, as_json)
            return
        if prompt is None:
            fail("--prompt FILE is required (or --compare to show earlier sample runs)", ExitCode.USAGE)
        try:
            report = api.sample(
                input,
                size=size,
                seed=seed,
                min_first_pass=min_first_pass,
                store=store,
                on_notice=lambda message: typer.echo(message, err=True),
                prompt=read_option_file(prompt, "--prompt") or "{document}",
                system=read_option_file(system, "--system"),
                schema=read_schema(schema),
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
            fail(str(exc), exc.exit_code)
    if as_json:
        print_json(report)
    else:
        typer.echo(render_sample(report))
    if not report["passed"]:
        raise typer.Exit(ExitCode.FAILED)


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


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
