"""Sample first: run a representative handful of documents synchronously before committing the whole corpus.

Someone is waiting for this step, so it goes through `Provider.send`, with the very requests the batch would carry
(`build_request`, the same custom_ids), validated by the run's own `check` and classified by the run's own
`failure_of`. The report gives the first-pass rate, each failure with its reason, and what the full input would take at
that rate: retries (`plan.retries.project_retries`) and cost, synchronous against batch (`plan.pricing.cost`). Every
sample run is kept in the store's `samples` table so prompt versions can be compared on the same documents.

The gate judges the prompt, not the dice. A failure the run repairs by itself - a reply cut off at max_tokens
(`raise_max_tokens`), a document over the context window (`chunk`), a service hiccup (`resubmit`) - is a retry the run
will make and pay for, not a reason for a human to rewrite the prompt; a reply that is not valid JSON, misses the
schema's fields, or is refused as built is. So the gate compares the *projected final success* (first-pass successes
plus the failures the run fixes itself) with `--min-first-pass`, and reports the first-pass rate and the retries'
cost beside it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from freight.domain import Errored, ErrorKind, FreightError, Outcome, Request, StopReason, Succeeded, Usage
from freight.plan.pricing import Pricer, PricingError
from freight.plan.retries import project_retries
from freight.providers import Provider, ProviderError
from freight.runner.build import build_request
from freight.runner.ids import base_custom_id
from freight.runner.inputs import Document
from freight.runner.job import RunOptions
from freight.runner.remediate import failure_of
from freight.runner.sampling import Pick, Selection, choose
from freight.runner.validate import check
from freight.store import Store
from freight.store.schema import samples

DEFAULT_SIZE = 8
DEFAULT_MIN_FIRST_PASS = 0.9
GATE_THRESHOLD_DOCUMENTS = 50  # `freight run` samples first only above this many documents


# Failure kinds (remediate.failure_of) the run repairs without a human, and the fix it applies: retries it will make.
SELF_REPAIRED: dict[str, str] = {
    "truncated": "raise_max_tokens",
    ErrorKind.CONTEXT_OVERFLOW.value: "chunk",
    "expired": "resubmit",
    "canceled": "resubmit",
    **{kind.value: "resubmit" for kind in ErrorKind if kind.retryable},
}


@dataclass(frozen=True)
class SampleSettings:
    size: int = DEFAULT_SIZE
    seed: int = 0
    min_first_pass: float = DEFAULT_MIN_FIRST_PASS
    concurrency: int = DEFAULT_SIZE  # the whole default sample at once: an engine that batches answers it together


def input_key(opts: RunOptions) -> str:
    """Which corpus a sample run belongs to: the input's absolute path (digested when too long for the column)."""
    path = str(Path(opts.input).resolve())
    return path if len(path) <= 200 else f"{path[:120]}...{hashlib.sha256(path.encode()).hexdigest()[:16]}"


def prompt_version(opts: RunOptions) -> str:
    """A short digest of everything that changes what is asked: two samples with the same digest asked the same."""
    what = {
        "prompt": opts.prompt,
        "system": opts.system,
        "schema": opts.schema,
        "model": opts.model,
        "max_tokens": opts.max_tokens,
        "temperature": opts.temperature,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def request_for(opts: RunOptions, doc: Document) -> Request:
    """The request the full run would send first for this document: same builder, same custom_id."""
    if doc.request is not None:  # the input was already provider batch request lines
        return doc.request
    return build_request(opts.template(), custom_id=base_custom_id(doc.doc_id), item_id=doc.doc_id, document=doc.text)


def run_sample(
    provider: Provider,
    opts: RunOptions,
    settings: SampleSettings,
    on_answer: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Choose, send, validate, project. Returns the report (a JSON-ready dict, as it is stored). `on_answer(done,
    total)` is called as each sampled document is answered, for a progress display."""
    selection, docs = choose(Path(opts.input), settings.size, settings.seed, opts.id_field, opts.text_field)
    requests = [request_for(opts, d) for d in docs]
    answered = 0
    lock = threading.Lock()

    def send(request: Request) -> tuple[Succeeded | Errored, ProviderError | None]:
        nonlocal answered
        outcome = _send(provider, request)
        with lock:
            answered += 1
            if on_answer is not None:
                on_answer(answered, len(requests))
        return outcome

    with ThreadPoolExecutor(max(1, min(settings.concurrency, len(requests)))) as pool:
        sent = list(pool.map(send, requests))
    unreachable = [err for _, err in sent if err is not None]
    if unreachable and len(unreachable) == len(sent):
        raise FreightError(
            f"the sample could not be run: {unreachable[0]}. Check --base-url / the API key and try again"
        )
    by_id = {p.doc_id: p for p in selection.picks}
    results = [
        _result(opts, by_id[doc.doc_id], doc, request, outcome)
        for doc, request, (outcome, _) in zip(docs, requests, sent, strict=True)
    ]
    report = _report(opts, settings, selection, results)
    report["spend"] = sample_spend(opts, [(r.model, o.usage) for r, (o, _) in zip(requests, sent, strict=True)])
    return report


def request_sha(request: Request) -> str:
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


def sampled_replies(store: Store, job_id: str, opts: RunOptions) -> dict[str, tuple[str, Succeeded]]:
    """The valid replies of the job's own passed sample gate, by custom_id, each with the sha of the request it
    answered: (sha, reply). Empty when the job was not sampled, or its sample's replies were not kept."""
    gates = [e["data"] for e in store.events(job_id, kind="sample.gate") if e["data"].get("passed")]
    if not gates:
        return {}
    runs = load_samples(store, opts, ids=[int(gates[-1]["sample_id"])])
    found: dict[str, tuple[str, Succeeded]] = {}
    for run in runs:
        for r in run.get("results", []):
            if r.get("ok") and r.get("reply") and r.get("request_sha"):
                found[r["custom_id"]] = (r["request_sha"], Succeeded.model_validate(r["reply"]))
    return found


def answered_by_sample(
    sampled: dict[str, tuple[str, Succeeded]], batch: list[Request]
) -> tuple[list[tuple[str, Outcome]], list[Request]]:
    """Split `batch` into (custom_id, the sample's reply) for the requests the sample answered validly - the very
    request, by sha - and the requests still to send."""
    taken: list[tuple[str, Outcome]] = []
    rest: list[Request] = []
    for request in batch:
        found = sampled.get(request.custom_id)
        if found is not None and found[0] == request_sha(request):
            taken.append((request.custom_id, found[1]))
        else:
            rest.append(request)
    return taken, rest


def sample_spend(opts: RunOptions, used: list[tuple[str, Usage]]) -> dict[str, Any]:
    """What the sample itself cost (it ran synchronously), each request at its own model; None when unpriced."""
    pricer = opts.pricer()
    prices = [pricer.cost(model, usage, batch=False) for model, usage in used]
    total = None if any(p is None for p in prices) else round(sum(p or 0.0 for p in prices), 6)
    return {"cost_usd": total, "unpriced": pricer.unpriced(m for m, _ in used)}


def _send(provider: Provider, request: Request) -> tuple[Succeeded | Errored, ProviderError | None]:
    try:
        return provider.send(request), None
    except ProviderError as exc:  # the API was not reached, or stayed overloaded through the adapter's retries
        return Errored(kind=exc.kind, raw_type=exc.raw_type, message=str(exc)), exc


def _result(
    opts: RunOptions, pick: Pick, doc: Document, request: Request, outcome: Succeeded | Errored
) -> dict[str, Any]:
    checked = check(outcome, opts.schema) if isinstance(outcome, Succeeded) else None
    ok = (
        isinstance(outcome, Succeeded)
        and checked is not None
        and checked.ok
        and outcome.stop_reason is not StopReason.MAX_TOKENS
    )
    failure = None if ok else failure_of(outcome, checked.error if checked else None)
    return {
        "doc_id": doc.doc_id,
        "custom_id": request.custom_id,
        "source": doc.source,
        "chars": pick.chars,
        "signature": pick.signature,
        "why": pick.reasons,
        "ok": ok,
        "failure": None if failure is None else {"kind": failure.kind, "message": failure.message},
        "output": checked.value if ok and checked is not None else None,
        "usage": outcome.usage.model_dump(),
        # A valid reply, whole, and which request it answers: the run takes it instead of paying for it again.
        "reply": outcome.model_dump(mode="json") if ok else None,
        "request_sha": request_sha(request),
    }


def _report(
    opts: RunOptions, settings: SampleSettings, selection: Selection, results: list[dict[str, Any]]
) -> dict[str, Any]:
    k = len(results)
    n = selection.documents
    rate = sum(r["ok"] for r in results) / k
    gate = gate_verdict(results, settings.min_first_pass)
    total = Usage()
    for r in results:
        total = total + Usage(**r["usage"])
    estimate = estimate_full_run(opts.model, total, k, n, rate, batch=opts.mode != "sync", pricer=opts.pricer())
    return {
        "input": opts.input,
        "documents": n,
        "size": k,
        "seed": settings.seed,
        "provider": opts.provider,
        "model": opts.model,
        "prompt_version": prompt_version(opts),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "first_pass_rate": round(rate, 4),
        "min_first_pass": settings.min_first_pass,
        **gate,
        "results": results,
        "failures": [
            {"doc_id": r["doc_id"], "custom_id": r["custom_id"], **r["failure"]} for r in results if not r["ok"]
        ],
        "uncovered": selection.uncovered,
        "strata": selection.strata,
        "tokens": {"input_tokens": total.input_tokens, "output_tokens": total.output_tokens},
        **estimate,
    }


def gate_verdict(results: list[dict[str, Any]], min_final: float) -> dict[str, Any]:
    """The gate's decision: the share of sampled documents the run will end with, first pass or by its own retries,
    against `min_final`. Failures that only a better prompt fixes (invalid JSON, missing fields, a refused request)
    count against it; failures the run repairs itself are listed as the retries it will make."""
    repaired: dict[str, int] = {}
    for r in results:
        if not r["ok"] and r["failure"]["kind"] in SELF_REPAIRED:
            fix = SELF_REPAIRED[r["failure"]["kind"]]
            repaired[fix] = repaired.get(fix, 0) + 1
    final = (sum(r["ok"] for r in results) + sum(repaired.values())) / len(results)
    return {
        "final_rate": round(final, 4),
        "self_repaired": repaired,
        "prompt_failures": sum(not r["ok"] for r in results) - sum(repaired.values()),
        "passed": final >= min_final,
    }


def gate_lines(report: dict[str, Any]) -> list[str]:
    """How the gate decided, in words: first-pass success, the retries the run makes itself, and the verdict."""
    k, ok = report["size"], sum(r["ok"] for r in report["results"])
    lines = [f"first-pass success: {ok}/{k} ({report['first_pass_rate']:.0%})"]
    repaired = report.get("self_repaired", {})
    if repaired:
        fixes = ", ".join(f"{fix} {count}" for fix, count in sorted(repaired.items()))
        lines.append(f"retries the run makes itself (not held against the prompt): {fixes}")
    final = report.get("final_rate", report["first_pass_rate"])
    ends = ok + sum(repaired.values())
    # This verdict alone: a sample stopped by --min-accuracy still says its projected success passed.
    verdict = "passes" if final >= report["min_first_pass"] else "is BELOW"
    lines.append(
        f"projected final success: {ends}/{k} ({final:.0%}), which {verdict} the gate of {report['min_first_pass']:.0%}"
    )
    return lines


def estimate_full_run(
    model: str, sample_usage: Usage, k: int, n: int, rate: float, batch: bool, pricer: Pricer | None = None
) -> dict[str, Any]:
    """The full run at the sample's rate: the first pass over N documents plus the projected retries, each request
    costing what a sampled document cost on average. An unpriced model is said to be unpriced, never priced at $0."""
    pricer = pricer or Pricer()
    name = pricer.name_for(model) or model  # no price: the table raises UnknownModel, whose message says so
    try:
        sync_per_doc = pricer.table.cost(name, sample_usage, batch=False) / k
        batch_per_doc = pricer.table.cost(name, sample_usage, batch=True) / k
    except PricingError as exc:
        projection = project_retries(n, rate, 0.0)
        return {
            "retries": {"documents": n, "retries": projection.retries, "total_requests": projection.total_requests},
            "cost": {"priced": False, "note": str(exc)},
        }
    projection = project_retries(n, rate, batch_per_doc if batch else sync_per_doc)
    requests = projection.total_requests
    return {
        "retries": {
            "documents": n,
            "retries": projection.retries,
            "total_requests": requests,
            "retry_cost_usd": round(projection.retry_cost, 6),
        },
        "cost": {
            "priced": True,
            "per_document": {
                "input_tokens": round(sample_usage.input_tokens / k),
                "output_tokens": round(sample_usage.output_tokens / k),
            },
            "sync_usd": round(sync_per_doc * requests, 6),
            "batch_usd": round(batch_per_doc * requests, 6),
        },
    }


# --- keeping sample runs ------------------------------------------------------------------------------------------
# The samples table belongs to this feature alone; a run is written once and never changed, so it needs none of the
# job store's state machinery.


def save_sample(store: Store, opts: RunOptions, report: dict[str, Any]) -> int:
    with store.engine.begin() as conn:
        result = conn.execute(
            samples.insert().values(
                input_key=input_key(opts),
                prompt_hash=report["prompt_version"],
                prompt=opts.prompt,
                created_at=datetime.now(UTC),
                report=report,
            )
        )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def load_samples(store: Store, opts: RunOptions, ids: list[int] | None = None, last: int = 2) -> list[dict[str, Any]]:
    """Sample runs of this input, oldest first: the ones named by `ids`, else the `last` ones."""
    q = sa.select(samples.c.id, samples.c.report).where(samples.c.input_key == input_key(opts))
    q = q.where(samples.c.id.in_(ids)) if ids else q.order_by(samples.c.id.desc()).limit(last)
    with store.engine.connect().execution_options(freight_read=True) as conn:
        rows = conn.execute(q).all()
    runs = [{**row.report, "sample_id": row.id} for row in rows]
    return sorted(runs, key=lambda r: r["sample_id"])
