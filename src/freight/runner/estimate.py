"""The dry run: what a job would cost, counted by the model's own token counter, with nothing sent for inference.

Every request is built exactly as the run builds it (`runner.sample.request_for`: the one builder, the same
custom_ids). Input tokens come from the provider's counting endpoint (`Provider.count_tokens`): every request of a
small input; of a large one, a stratified sample (strata by prompt length, a ratio estimator per stratum against the
characters of every request) with its 95 % error bar stated. A document that could be over the model's window - its
UTF-8 bytes alone leave no room for max_tokens, and a token is at least one byte - is always counted, so the
documents over the window, and the parts each would be split into (the run's own formula, `runner.chunking`), are
exact. Output is bounded twice: by max_tokens (the worst case), and by the output a stored sample of the same prompt
version observed (the expected case, with its own error bar), when there is one.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freight.domain import FreightError, Request, Usage
from freight.plan.pricing import Pricer
from freight.providers import Provider
from freight.providers.packing import pack_for
from freight.providers.protocol import TokenCount
from freight.runner.chunking import chunk_budget, may_overflow, split_for_window
from freight.runner.inputs import read_input
from freight.runner.job import RunOptions
from freight.runner.sample import prompt_version, request_for
from freight.runner.tokens import TokenCounter

COUNT_ALL_UP_TO = 200  # inputs this small are counted request by request: the estimate is exact
STRATA = 10
Z95 = 1.96


@dataclass
class _Req:
    request: Request
    document: str | None  # None for a ready-made batch line (it cannot be split)
    chars: int
    window: int
    counted: int | None = None
    estimate: float = 0.0


@dataclass
class Observed:
    """Output tokens per document, from a stored sample of the same prompt version."""

    sample_id: int
    outputs: list[int] = field(default_factory=list)


def observed_output(samples: Sequence[dict[str, Any]], opts: RunOptions) -> Observed | None:
    """The newest stored sample of this input asked exactly as this run asks (same prompt version), if any."""
    version = prompt_version(opts)
    for s in reversed(samples):
        if s.get("prompt_version") == version and s.get("results"):
            return Observed(int(s["sample_id"]), [int(r["usage"]["output_tokens"]) for r in s["results"]])
    return None


def estimate(
    provider: Provider,
    opts: RunOptions,
    *,
    pricer: Pricer | None = None,
    observed: Observed | None = None,
    count_all_up_to: int = COUNT_ALL_UP_TO,
    sample_size: int = COUNT_ALL_UP_TO,
    seed: int = 0,
    concurrency: int = 4,
) -> dict[str, Any]:
    """The forecast of a run with `opts` (a JSON-ready dict; `render_estimate` prints it)."""
    pricer = pricer or opts.pricer()
    reqs: list[_Req] = []
    for doc in read_input(Path(opts.input), opts.id_field, opts.text_field):
        if doc.error:
            continue  # the run fails it alone, unsent
        request = request_for(opts, doc)
        window = provider.limits.context_for(request.model)
        reqs.append(_Req(request, None if doc.request else doc.text, len(request.prompt_text()), window))
    if not reqs:
        raise FreightError("the input holds no documents")
    suspects = [r for r in reqs if _may_overflow(r)]
    rest = [r for r in reqs if not _may_overflow(r)]
    strata = _strata(rest, count_all_up_to, sample_size, seed)
    to_count = suspects + [r for members, picked in strata for r in picked]
    how = _count(provider, to_count, concurrency)
    variance = sum(_ratio_fill(members, picked) for members, picked in strata)
    for r in suspects:
        r.estimate = float(r.counted or 0)

    over: list[dict[str, Any]] = []
    requests = len(reqs)
    for r in suspects:
        if (r.counted or 0) + r.request.max_tokens <= r.window:
            continue
        parts = _parts(r, opts)
        over.append(
            {"custom_id": r.request.custom_id, "item_id": r.request.item_id, "input_tokens": r.counted,
             "window": r.window, "parts": parts}
        )  # fmt: skip
        if parts:
            requests += parts - 1
    input_tokens = sum(r.estimate for r in reqs)
    input_bar = Z95 * math.sqrt(variance)
    worst_output = sum(r.request.max_tokens for r in reqs)
    out = _expected_output(observed, requests, len(reqs))
    model = opts.model or reqs[0].request.model
    return {
        "input": opts.input,
        "model": model,
        "documents": len(reqs),
        "requests": requests,
        "counted": len(to_count),
        "counter": how,
        "exact": variance == 0 and all(s[1] == s[0] for s in strata),
        "input_tokens": round(input_tokens),
        "input_tokens_error": round(input_bar),
        "output_tokens_worst": worst_output,
        **out,
        "over_window": over,
        "batches": 0 if opts.mode == "sync" else _batches(provider, reqs, opts),
        "cost": _costs(pricer, model, input_tokens, input_bar, worst_output, out),
        "max_tokens": opts.max_tokens,
    }


def _may_overflow(r: _Req) -> bool:
    return may_overflow(r.request, r.window)


def _strata(rest: list[_Req], count_all_up_to: int, sample_size: int, seed: int) -> list[tuple[list[_Req], list[_Req]]]:
    """(members, the ones to count) per stratum of prompt length; one stratum, all counted, for a small input."""
    if len(rest) <= count_all_up_to:
        return [(rest, list(rest))] if rest else []
    ordered = sorted(rest, key=lambda r: r.chars)
    rng = random.Random(seed)
    size = math.ceil(len(ordered) / STRATA)
    out: list[tuple[list[_Req], list[_Req]]] = []
    for start in range(0, len(ordered), size):
        members = ordered[start : start + size]
        n = min(len(members), max(2, round(sample_size * len(members) / len(ordered))))
        out.append((members, rng.sample(members, n)))
    return out


def _count(provider: Provider, reqs: list[_Req], concurrency: int) -> str:
    counter = TokenCounter(provider)  # a dry run has no job yet: an estimate, if any, is at 4 characters a token

    def one(r: _Req) -> TokenCount:
        return counter.count(r.request)

    hows: set[str] = set()
    with ThreadPoolExecutor(concurrency) as pool:
        for r, counted in zip(reqs, pool.map(one, reqs), strict=True):
            r.counted = counted.input_tokens
            hows.add(f"{counted.how} (an estimate)" if counted.estimated else counted.how)
    return ", ".join(sorted(hows)) or "nothing to count"


def _ratio_fill(members: list[_Req], picked: list[_Req]) -> float:
    """Fill every member's estimate (counted: the count; else the stratum's tokens-per-character ratio times its
    characters); return the variance of the stratum's total (the ratio estimator's, with the finite-population
    correction: 0 when every member was counted)."""
    ratio = sum(r.counted or 0 for r in picked) / max(1, sum(r.chars for r in picked))
    for r in members:
        r.estimate = float(r.counted) if r.counted is not None else ratio * r.chars
    n, big_n = len(picked), len(members)
    if n >= big_n or n < 2:
        return 0.0
    residuals = [(r.counted or 0) - ratio * r.chars for r in picked]
    s2 = sum(e * e for e in residuals) / (n - 1)
    return big_n * big_n * (1 - n / big_n) * s2 / n


def _parts(r: _Req, opts: RunOptions) -> int | None:
    """How many parts the run would split this document into before sending it (None: it cannot be split)."""
    if r.document is None:
        return None
    template = opts.template()
    budget = chunk_budget(
        r.document, r.counted, r.window, r.request.max_tokens, len(template.render("") + (template.system or ""))
    )
    return None if budget is None else len(split_for_window(r.document, budget))


def _expected_output(observed: Observed | None, requests: int, documents: int) -> dict[str, Any]:
    if observed is None or not observed.outputs:
        return {"output_tokens_expected": None, "output_tokens_error": None, "output_from_sample": None}
    k = len(observed.outputs)
    mean = statistics.fmean(observed.outputs)
    sd = statistics.stdev(observed.outputs) if k > 1 else mean
    fpc = max(0.0, 1 - k / documents)
    return {
        "output_tokens_expected": round(mean * requests),
        "output_tokens_error": round(Z95 * requests * sd * math.sqrt(fpc / k)),
        "output_from_sample": observed.sample_id,
    }


def _batches(provider: Provider, reqs: list[_Req], opts: RunOptions) -> int:
    limits = provider.limits
    size = opts.extra.get("batch_size")
    if size:
        limits = limits.model_copy(update={"max_requests_per_batch": int(size)})
    fits = (r.request for r in reqs if (r.counted or 0) + r.request.max_tokens <= r.window)
    return sum(1 for _ in pack_for(provider, fits, limits))


def _costs(
    pricer: Pricer, model: str, input_tokens: float, input_bar: float, worst: int, out: dict[str, Any]
) -> dict[str, Any] | None:
    """US dollars both ways: expected (with its 95 % bar, when a sample observed the output) and worst case."""

    def price(inp: float, outp: float, batch: bool) -> float | None:
        return pricer.cost(model, Usage(input_tokens=round(inp), output_tokens=round(outp)), batch)

    costs: dict[str, Any] = {}
    for way, batch in (("batch", True), ("sync", False)):
        worst_usd = price(input_tokens, worst, batch)
        if worst_usd is None:
            return None  # no price: said as unknown, never $0
        entry: dict[str, Any] = {"worst_usd": worst_usd, "input_usd": price(input_tokens, 0, batch)}
        expected = out["output_tokens_expected"]
        if expected is not None:
            in_bar = price(input_bar, 0, batch) or 0.0
            out_bar = price(0, out["output_tokens_error"], batch) or 0.0
            entry["expected_usd"] = price(input_tokens, expected, batch)
            entry["error_usd"] = math.hypot(in_bar, out_bar)
        costs[way] = entry
    return costs


def render_estimate(e: dict[str, Any], on_line: Callable[[str], None]) -> None:
    """The dry run's report, line by line."""
    exact = "counted request by request" if e["exact"] else f"{e['counted']:,} counted, stratified by length"
    on_line(f"dry run: {e['documents']:,} documents -> {e['requests']:,} requests on {e['model']}; nothing was sent")
    on_line(f"input tokens: {e['input_tokens']:,} +/- {e['input_tokens_error']:,} (95%) - {exact}; by {e['counter']}")
    worst = f"output tokens: at most {e['output_tokens_worst']:,} (max_tokens {e['max_tokens']:,} per request)"
    if e["output_tokens_expected"] is not None:
        worst += (
            f"; expected {e['output_tokens_expected']:,} +/- {e['output_tokens_error']:,} "
            f"(from sample #{e['output_from_sample']})"
        )
    else:
        worst += "; no stored sample of this prompt, so no expected output (`freight sample` gives one)"
    on_line(worst)
    cost = e["cost"]
    if cost is None:
        on_line("cost: unknown (the model has no price: --prices FILE or --price-as MODEL)")
    else:
        for way in ("batch", "sync"):
            c = cost[way]
            line = f"cost {way:5}: worst case ${c['worst_usd']:.4f}"
            if "expected_usd" in c:
                line += f", expected ${c['expected_usd']:.4f} +/- ${c['error_usd']:.4f} (95%)"
            on_line(line + f" (input alone ${c['input_usd']:.4f})")
    on_line(f"batches: {e['batches']:,}" if e["batches"] else "batches: none (synchronous)")
    if not e["over_window"]:
        on_line("over the context window: none")
        return
    on_line(f"over the context window: {len(e['over_window'])} (split before their first submission)")
    for o in e["over_window"][:10]:
        parts = f"split into {o['parts']} parts" if o["parts"] else "cannot be split: it will fail"
        on_line(f"  {o['item_id'] or o['custom_id']}: {o['input_tokens']:,} tokens > window {o['window']:,}; {parts}")
    if len(e["over_window"]) > 10:
        on_line(f"  ... and {len(e['over_window']) - 10} more")
