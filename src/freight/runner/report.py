"""A job's outputs and final report, derived from the store (the only truth) whenever they are asked for.

`results.jsonl`: one line per input document, in input order. `failures.jsonl`: the documents that did not succeed.
`report.json`: the numbers, also printed at the end of a run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from freight.domain import ItemState
from freight.runner.hedge import hedge_summary, render_hedge
from freight.runner.job import RunOptions
from freight.runner.vectors import VectorWriter
from freight.store import Store

_TOKENS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")


def priced(store: Store, job_id: str) -> bool:
    """False once any of the job's requests (or its sample) had no price: its costs then read unknown, never $0."""
    return not store.events(job_id, kind="cost.unpriced")


def sample_spend(store: Store, job_id: str) -> float:
    """What the job's sample gates spent (synchronously), from their entries in the job's log."""
    return sum(float(e["data"].get("cost_usd") or 0.0) for e in store.events(job_id, kind="sample.gate"))


def item_results(store: Store, job_id: str, **which: Any) -> Iterator[dict[str, Any]]:
    """One line per input document, in input order: what results.jsonl holds. `which`: `Store.item_pages`'s filters
    (states, updated_since), for the lines of some documents only."""
    for line, _ in _item_lines(store, job_id, priced(store, job_id), **which):
        yield line


def _item_lines(
    store: Store, job_id: str, known: bool, **which: Any
) -> Iterator[tuple[dict[str, Any], list[tuple[str, float]]]]:
    """Each line, with what each of its attempts cost by the fix that made it ("first_pass" for the first). Read a
    page of documents at a time (two queries per 500), never a query per document. `which`: `Store.item_pages`'s
    filters (states, updated_since)."""
    for line, spent, _, _ in _stamped_lines(store, job_id, known, **which):
        yield line, spent


def stamped_results(
    store: Store, job_id: str, known: bool, **which: Any
) -> Iterator[tuple[dict[str, Any], list[tuple[str, float]], Any, int]]:
    """`item_results`'s lines (costs shown when `known`), each with what each attempt cost by fix, when its
    document last changed (`items.updated_at`) and its place in the input (`items.seq`)."""
    yield from _stamped_lines(store, job_id, known, **which)


def _stamped_lines(
    store: Store, job_id: str, known: bool, **which: Any
) -> Iterator[tuple[dict[str, Any], list[tuple[str, float]], Any, int]]:
    for page in store.item_pages(job_id, **which):
        for row, reqs in page:
            state = ItemState(row["state"])
            output = row["output"] or {}
            if len(reqs) == 1:  # most documents: one request, nothing to add up
                (r,) = reqs
                usage = {k: int(r[k] or 0) for k in _TOKENS}
                cost = float(r["cost_usd"] or 0)
            else:
                usage = {k: sum(int(r[k] or 0) for r in reqs) for k in _TOKENS}
                cost = sum(float(r["cost_usd"] or 0) for r in reqs)
            line = {
                "id": row["item_id"],
                "custom_ids": [r["custom_id"] for r in reqs],
                "status": state.value,
                "output": output.get("value") if isinstance(output, dict) else output,
                "metadata": output.get("meta", {}) if isinstance(output, dict) else {},
                "error": row["error"] if state is not ItemState.SUCCEEDED else None,
                "attempts": len(reqs),
                "fixes": [r["fix"] for r in reqs if r["fix"]],
                "first_pass": state is ItemState.SUCCEEDED and len(reqs) == 1,
                "usage": usage,
                "cost_usd": round(cost, 6) if known else None,
            }
            spent = [(r["fix"] or "first_pass", float(r["cost_usd"] or 0)) for r in reqs]
            yield line, spent, row["updated_at"], row["seq"]


class Tally:
    """The report's counts, added up line by line (by `build_report`, or by the feed as it writes the lines)."""

    def __init__(self) -> None:
        self.failed_by: Counter[str] = Counter()
        self.by_fix: dict[str, float] = {}
        self.documents = self.succeeded = self.first_pass = 0

    def add(self, line: dict[str, Any], spent: list[tuple[str, float]]) -> None:
        for fix, dollars in spent:
            self.by_fix[fix] = self.by_fix.get(fix, 0.0) + dollars
        self.documents += 1
        self.succeeded += line["status"] == "succeeded"
        self.first_pass += line["first_pass"]
        if line["status"] != "succeeded":
            self.failed_by[(line["error"] or {}).get("kind", line["status"])] += 1


class Written(Protocol):
    """Lines already written for a job while it ran (`runner/feed.py`): when they are every document's final line,
    `build_report` puts them in input order instead of building each line again."""

    def ordered_copy(self, store: Store, job_id: str, known: bool, write_to: Path) -> Tally | None: ...


def build_report(
    store: Store, job_id: str, write_to: Path | None = None, written: Written | None = None
) -> dict[str, Any]:
    """The report; with `write_to`, also results.jsonl and failures.jsonl there, streamed item by item (or, when
    `written` holds every document's final line already, those lines put in input order)."""
    known = priced(store, job_id)
    job = store.get_job(job_id)
    embeddings = job is not None and RunOptions.from_config(job.config).api == "embeddings"
    tally = None
    if written is not None and write_to is not None and not embeddings:
        tally = written.ordered_copy(store, job_id, known, write_to)
    if tally is None:
        tally = _write_lines(store, job_id, known, write_to, embeddings)
    failed_by, by_fix = tally.failed_by, tally.by_fix
    documents, succeeded, first_pass = tally.documents, tally.succeeded, tally.first_pass
    totals = store.totals(job_id)
    report = {
        "job": job_id,
        "state": job.state.value if job else None,
        "model": job.model if job else None,
        "provider": job.provider if job else None,
        "endpoint": RunOptions.from_config(job.config).endpoint if job else None,
        "documents": documents,
        "succeeded": succeeded,
        "failed": documents
        - succeeded
        - store.item_counts(job_id).get("pending", 0)
        - store.item_counts(job_id).get("in_flight", 0),
        "failed_by_reason": dict(failed_by),
        "first_pass_success_rate": round(first_pass / documents, 4) if documents else 0.0,
        "retries_by_fix": store.fix_counts(job_id),
        "tokens": {
            k: int(totals[k]) for k in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")
        },
        **_costs(totals, sample_spend(store, job_id), by_fix, known),
    }
    caps = store.events(job_id, kind="cost.cap")  # runner/budget.py: the newest is in force
    if caps and caps[-1]["data"].get("max_cost") is not None:
        counts = store.item_counts(job_id)
        report["cost_cap"] = {
            "max_cost_usd": float(caps[-1]["data"]["max_cost"]),
            "spent_usd": report["cost_usd"],
            "undone": counts.get("pending", 0) + counts.get("in_flight", 0),
        }
    hedge = hedge_summary(store, job_id)
    if hedge is not None:
        report["hedge"] = hedge
    if write_to is not None:
        (write_to / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _write_lines(store: Store, job_id: str, known: bool, write_to: Path | None, embeddings: bool) -> Tally:
    tally = Tally()
    files = None
    vectors: VectorWriter | None = None
    if write_to is not None:
        write_to.mkdir(parents=True, exist_ok=True)
        files = (
            (write_to / "results.jsonl").open("w", encoding="utf-8"),
            (write_to / "failures.jsonl").open("w", encoding="utf-8"),
        )
        if embeddings:
            vectors = VectorWriter(write_to)
    try:
        for line, spent in _item_lines(store, job_id, known):
            tally.add(line, spent)
            if files:
                text = json.dumps(line, ensure_ascii=False) + "\n"
                files[0].write(text)
                if line["status"] != "succeeded":
                    files[1].write(text)
            if vectors is not None and line["status"] == "succeeded":
                vectors.add(line["id"], line["output"])
    finally:
        for f in files or ():
            f.close()
        if vectors is not None:
            vectors.close()
    return tally


def _costs(totals: dict[str, float], sample: float, by_fix: dict[str, float], known: bool) -> dict[str, Any]:
    """The job's cost: every outcome's, plus its sample's (paid at the synchronous price); broken down by fix. All
    None when any request had no price: a partial sum presented as the cost would be a lie."""
    if not known:
        return {"cost_usd": None, "sync_cost_usd": None, "saving_usd": None, "cost_by_fix": None}
    paid = totals["cost_usd"] + sample
    sync = totals["sync_cost_usd"] + sample
    breakdown = {"sample": sample} if sample else {}
    breakdown.update({fix: dollars for fix, dollars in sorted(by_fix.items(), key=lambda kv: kv[0] != "first_pass")})
    return {
        "cost_usd": round(paid, 6),
        "sync_cost_usd": round(sync, 6),
        "saving_usd": round(sync - paid, 6),
        "cost_by_fix": {k: round(v, 6) for k, v in breakdown.items()},
    }


def money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def render_report(report: dict[str, Any]) -> str:
    lines = [
        f"job {report['job']} ({report['state']}): {report['documents']} documents, "
        f"{report['succeeded']} succeeded, {report['failed']} failed",
        f"first-pass success: {report['first_pass_success_rate']:.0%}",
    ]
    if report["failed_by_reason"]:
        lines.append(
            "failed by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(report["failed_by_reason"].items()))
        )
    if report["retries_by_fix"]:
        lines.append("retries by fix: " + ", ".join(f"{k} {v}" for k, v in sorted(report["retries_by_fix"].items())))
    if report.get("hedge"):
        lines.append(render_hedge(report["hedge"]))
    t = report["tokens"]
    lines.append(f"tokens: {t['input_tokens']:,} in, {t['output_tokens']:,} out")
    if report["cost_usd"] is None:
        lines.append("cost: unknown (a model had no price: --prices FILE or --price-as MODEL gives it one)")
        return "\n".join(lines)
    lines.append(
        f"cost: {money(report['cost_usd'])} paid; {money(report['sync_cost_usd'])} through the synchronous API; "
        f"saved {money(report['saving_usd'])}"
    )
    if report["cost_by_fix"]:
        parts = ", ".join(f"{k.replace('_', ' ')} {money(v)}" for k, v in report["cost_by_fix"].items())
        lines.append(f"cost by fix: {parts}")
    if cap := report.get("cost_cap"):
        undone = f"{cap['undone']} document(s) not done" if cap["undone"] else "nothing left undone"
        more = f" (raise it: freight resume {report['job']} --max-cost N)" if cap["undone"] else ""
        lines.append(f"cost cap: {money(cap['max_cost_usd'])}; spent {money(cap['spent_usd'])}; {undone}{more}")
    return "\n".join(lines)
