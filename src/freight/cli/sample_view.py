"""How a sample reads on a terminal: one run (`render_sample`), and runs side by side (`render_compare`).

Shared by `freight sample` and the gate at the start of `freight run`, which is why it is a module of its own.
"""

from __future__ import annotations

from typing import Any

from freight.runner.accuracy import render_accuracy
from freight.runner.report import money
from freight.runner.sample import gate_lines

# --- one run ------------------------------------------------------------------------------------------------------


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
    if report.get("accuracy"):
        lines.append(render_accuracy(report["accuracy"]))
        need, got = report.get("min_accuracy"), report["accuracy"]["accuracy"]
        if need is not None:
            verdict = "passes" if got is not None and got >= need else "is BELOW"
            lines.append(f"field accuracy {got or 0:.0%}, which {verdict} the gate of {need:.0%} (--min-accuracy)")
    t = report["tokens"]
    spent = report.get("spend", {}).get("cost_usd")
    lines.append(
        f"the sample used {t['input_tokens']:,} input and {t['output_tokens']:,} output tokens, costing {money(spent)}"
    )
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
    # With --expected: "succeeded" is not "right" - the field accuracy of each prompt version, overall and by field.
    scored = [r.get("accuracy") for r in runs]
    if any(scored):
        rows.append(["accuracy", *(_acc(a) for a in scored)])
        fields = sorted({f for a in scored if a for f in a["per_field"]})
        for f in fields:
            rows.append([f"  {f}", *(_acc(a["per_field"].get(f)) if a else "-" for a in scored)])
    per_doc = [{d["doc_id"]: d for d in a["documents"]} if a else {} for a in scored]
    order: list[str] = []
    by_run: list[dict[str, dict[str, Any]]] = []
    for r in runs:
        by_run.append({x["doc_id"]: x for x in r["results"]})
        order += [x["doc_id"] for x in r["results"] if x["doc_id"] not in order]
    for doc_id in order:
        cells = []
        for results, docs in zip(by_run, per_doc, strict=True):
            x = results.get(doc_id)
            cell = "-" if x is None else "ok" if x["ok"] else f"FAIL {x['failure']['kind']}"
            if x is not None and doc_id in docs:
                cell += f" {docs[doc_id]['correct']}/{docs[doc_id]['fields']}"
            cells.append(cell)
        rows.append([doc_id, *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if len({tuple(sorted(res)) for res in by_run}) > 1:
        lines.append("note: the runs sampled different documents (another --seed or --size, or the input changed)")
    for r in runs:
        if r["failures"]:
            lines.append(f"#{r['sample_id']} {r['prompt_version']} " + "\n".join(_failures(r["failures"])))
    return "\n".join(lines)


def _acc(a: dict[str, Any] | None) -> str:
    """A score as the grid shows it: the share and the count behind it."""
    if not a or a.get("accuracy") is None:
        return "-"
    correct = a["correct"]
    total = a.get("fields", a.get("total"))
    return f"{a['accuracy']:.0%} ({correct}/{total})"
