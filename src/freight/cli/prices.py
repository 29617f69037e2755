"""`freight prices`: the price table a run would charge with - the packaged one, with `--prices FILE` overrides marked
- so a user can see, and correct, what freight will bill them before it does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from freight.cli.common import fail, print_json
from freight.domain import ExitCode
from freight.plan.pricing import PriceTable, PricingError, load_prices


def register(app: typer.Typer) -> None:
    app.command("prices")(prices)


def rows(table: PriceTable, provider: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """One row per listed model: its synchronous and batch prices, the date it was checked, and where it came from."""
    out: list[dict[str, Any]] = []
    for name, prov in table.providers.items():
        if provider and name != provider:
            continue
        for listed, price in prov.models.items():
            if model and model != listed and not model.startswith(listed + "-"):
                continue
            override = table.overrides.get(f"{name}/{listed}")
            out.append(
                {
                    "provider": name,
                    "model": listed,
                    "input": price.input,
                    "output": price.output,
                    "cache_write": price.cache_write,
                    "cache_read": price.cache_read,
                    "batch_input": price.input * prov.batch_discount,
                    "batch_output": price.output * prov.batch_discount,
                    "checked": price.checked,
                    "source": f"override: {override}" if override else "packaged",
                }
            )
    return out


def prices(
    model: Annotated[str | None, typer.Argument(help="Show only this model (a dated id matches its family).")] = None,
    prices_file: Annotated[
        Path | None, typer.Option("--prices", help="A prices YAML file overriding the packaged table.")
    ] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="Show only this provider's models.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """The price table in use: US dollars per million tokens, synchronous and batch, each with the date it was
    checked; `--prices FILE` overrides are marked."""
    try:
        table = load_prices(prices_file)
    except PricingError as exc:
        fail(str(exc), ExitCode.USAGE)
    if provider and provider not in table.providers:
        fail(f"--provider {provider!r}: the table lists {', '.join(table.providers)}", ExitCode.USAGE)
    found = rows(table, provider, model)
    if model and not found:
        fail(f"{model!r}: no such model in {table.origin}; `freight prices` lists them all", ExitCode.USAGE)
    if as_json:
        print_json({"origin": table.origin, "as_of": table.as_of, "models": found})
        return
    grid = Table(title=f"prices in use ({table.origin}), US$ per million tokens", title_justify="left")
    for col in ("provider", "model", "input", "output", "cache write", "cache read", "batch in", "batch out"):
        grid.add_column(col, justify="right" if col not in ("provider", "model") else "left")
    grid.add_column("checked")
    grid.add_column("source")
    for r in found:
        grid.add_row(
            r["provider"],
            r["model"],
            *(f"{r[k]:g}" for k in ("input", "output", "cache_write", "cache_read", "batch_input", "batch_output")),
            r["checked"] or "not stated",
            r["source"],
        )
    Console(width=200, soft_wrap=True).print(grid)
    typer.echo("Check these against the providers' pricing pages; correct them with --prices FILE.")
