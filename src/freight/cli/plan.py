"""`freight plan`: decide synchronous or batch for each workflow of a file, and show why and what it costs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from freight.cli.common import fail, print_json
from freight.domain import FreightError
from freight.plan import Plan, Verdict, WorkflowPlan, load_prices, load_workflows, make_plan
from freight.plan.model import parse_duration
from freight.plan.routing import hours


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def plan(
    workflows: Annotated[Path, typer.Argument(help="A workflows YAML file (see examples/workflows.yaml).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON instead of tables.")] = False,
    prices: Annotated[
        Path | None, typer.Option("--prices", help="A prices YAML file overriding the packaged table.")
    ] = None,
    propose_all_batch: Annotated[
        bool, typer.Option("--propose-all-batch", help="Judge moving every workflow to batch, move by move.")
    ] = False,
    min_batch_requests: Annotated[
        int | None,
        typer.Option("--min-batch-requests", min=0, help="Fewer requests per run stay synchronous (default 100)."),
    ] = None,
    safety_margin: Annotated[
        str | None,
        typer.Option("--safety-margin", help="How much an SLA must exceed the batch window, e.g. 2h (default 2h)."),
    ] = None,
    now: Annotated[
        datetime | None,
        typer.Option("--now", help="Plan as of this time (ISO 8601; default: the current time). Naive times are UTC."),
    ] = None,
) -> None:
    """Decide synchronous or batch for each workflow, with every reason, the costs both ways and the cadence."""
    try:
        margin: timedelta | None = parse_duration(safety_margin) if safety_margin is not None else None
    except ValueError as exc:
        fail(f"--safety-margin: {exc}")
    moment = now or datetime.now(UTC)
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    try:
        result = make_plan(
            load_workflows(workflows),
            prices=load_prices(prices),
            now=moment,
            min_batch_requests=min_batch_requests,
            safety_margin=margin,
            propose_all_batch=propose_all_batch,
        )
    except FreightError as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_json())
    else:
        render(result, Console())


def _usd(x: float) -> str:
    # Sub-cent amounts keep four decimals so a cheap workflow does not read as free.
    return f"${x:,.2f}" if x == 0 or abs(x) >= 0.01 else f"${x:.4f}"


def render(result: Plan, console: Console) -> None:
    table = Table(title="freight plan", title_justify="left")
    for column, justify in (
        ("workflow", "left"),
        ("decision", "left"),
        ("model", "left"),
        ("per run sync / batch", "right"),
        ("per month sync", "right"),
        ("per month batch", "right"),
        ("saving / month", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for p in result.workflows:
        c = p.costs
        table.add_row(
            escape(p.workflow.name),
            "[bold green]batch[/]" if p.decision.is_batch else "[bold yellow]sync[/]",
            escape(p.workflow.model),
            f"{_usd(c.sync_per_run)} / {_usd(c.batch_per_run)}",
            _usd(c.sync_per_month),
            _usd(c.batch_per_month),
            _usd(c.saving_per_month) if p.decision.is_batch else f"({_usd(c.saving_per_month)} forgone)",
        )
    console.print(table)
    for p in result.workflows:
        _render_details(p, console)
    total = sum(p.chosen_per_month for p in result.workflows)
    all_sync = sum(p.costs.sync_per_month for p in result.workflows)
    console.print(f"\nPlanned: {_usd(total)} a month, against {_usd(all_sync)} with everything synchronous.")
    if result.proposal is not None:
        _render_proposal(result, console)
    console.print(
        f"\n[dim]Prices: {escape(result.prices.source)} ({escape(result.prices.origin)}). "
        f"Policy: batch from {result.policy.min_batch_requests} requests per run, "
        f"{hours(result.policy.safety_margin)} safety margin. A month is 30 days.[/]"
    )


def _render_details(p: WorkflowPlan, console: Console) -> None:
    mode = "batch" if p.decision.is_batch else "sync"
    console.print(f"\n[bold]{escape(p.workflow.name)}[/] -> {mode}")
    for reason in p.decision.reasons:
        console.print(f"  - {escape(reason.text)}")
    if p.cadence is not None:
        cad = p.cadence
        console.print(
            f"  buffer {hours(cad.buffer)} (time allowed - {hours(p.decision.batch_window)} window): submit "
            f"{cad.every()}; work ready at {_at(cad.ready_at)} must be submitted by {_at(cad.latest_submission)} "
            f"to be back by {_at(cad.due)}"
        )
    if p.retries is not None:
        console.print(f"  retries per run: {escape(p.retries.describe())}")


def _render_proposal(result: Plan, console: Console) -> None:
    review = result.proposal
    assert review is not None
    table = Table(title=f"proposal: {escape(review.title)}", title_justify="left")
    table.add_column("move to batch")
    table.add_column("verdict")
    table.add_column("why")
    style = {Verdict.ACCEPTED: "green", Verdict.REFUSED: "red", Verdict.ALREADY_BATCH: "dim"}
    for move in review.moves:
        table.add_row(
            escape(move.workflow),
            f"[{style[move.verdict]}]{move.verdict.value}[/]",
            "\n".join(escape(w) for w in move.why),
        )
    console.print()
    console.print(table)
    console.print(
        f"The accepted moves save {_usd(review.accepted_saving_per_month)} a month "
        f"of the {_usd(review.claimed_saving_per_month)} the proposal counts on."
    )


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()
