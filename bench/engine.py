"""How fast the local engine is, directly and behind `freight serve` (a batch through the Anthropic SDK).

    .venv/bin/python bench/engine.py [--n 6] [--max-tokens 320]

Sends the first N invoices of examples/invoices (prompt.txt + schema.json, temperature 0) three ways:
  direct/per-worker  LocalEngine(pool="per-worker"): one llama.cpp instance per core, one thread each
  direct/shared      LocalEngine(pool="shared"): one instance using every core, behind a lock
  serve/batch        LocalServer(engine="local") + anthropic.messages.batches (create, poll, results)
and prints generated tokens per second, requests per minute, the server's overhead as a ratio of the direct default
(per-worker) figure, and the share of fields the model got right against examples/invoices/expected.jsonl.
The machine's other load moves these figures: run it on a quiet machine, once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "invoices"
FIELDS = ("vendor", "invoice_number", "date", "currency", "total")


def load(n: int) -> tuple[list[str], dict[str, Any], list[dict[str, Any]]]:
    template = (CORPUS / "prompt.txt").read_text(encoding="utf-8")
    schema = json.loads((CORPUS / "schema.json").read_text(encoding="utf-8"))
    expected = [json.loads(line) for line in (CORPUS / "expected.jsonl").read_text(encoding="utf-8").splitlines()][:n]
    prompts = [template.replace("{document}", (CORPUS / e["file"]).read_text(encoding="utf-8")) for e in expected]
    return prompts, schema, expected


def right_fields(replies: list[Any], expected: list[dict[str, Any]]) -> float:
    right = total = 0
    for got, want in zip(replies, expected, strict=True):
        for field in FIELDS:
            total += 1
            value = got.get(field) if isinstance(got, dict) else None
            if field == "total":
                right += isinstance(value, int | float) and abs(float(value) - float(want[field])) < 0.01
            else:
                right += isinstance(value, str) and value.strip().lower() == str(want[field]).lower()
    return right / total if total else 0.0


def parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def direct(pool: str, prompts: list[str], schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    from freight.domain import Message, Request
    from freight.server.engines.local import LocalEngine

    engine = LocalEngine(pool=pool)  # type: ignore[arg-type]
    requests = [
        Request(custom_id=f"doc-{i}", model="smollm2-135m", max_tokens=max_tokens, temperature=0.0,
                messages=[Message(role="user", content=p)], output_schema=schema)
        for i, p in enumerate(prompts)
    ]  # fmt: skip
    engine.complete(Request(custom_id="warm", model="m", max_tokens=4, messages=[Message(role="user", content="hi")]))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=engine.workers) as ex:
        outs = list(ex.map(engine.complete, requests))
    elapsed = time.perf_counter() - start
    tokens = sum(o.usage.output_tokens for o in outs)
    replies = [parse(o.text) if o.status == "succeeded" else None for o in outs]
    return {"elapsed": elapsed, "tokens": tokens, "n": len(outs), "replies": replies, "workers": engine.workers}


def served(prompts: list[str], schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    import anthropic

    from freight.server.testing import LocalServer

    cores = os.cpu_count() or 1
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalServer(Path(tmp) / "bench.db", engine="local", time_scale=0.0001, workers=cores) as srv,
    ):
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=2, timeout=300)
        client.messages.create(model="m", max_tokens=4, messages=[{"role": "user", "content": "hi"}])  # warm up
        start = time.perf_counter()
        batch = client.messages.batches.create(
            requests=[
                {"custom_id": f"doc-{i}", "params": {
                    "model": "smollm2-135m", "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "user", "content": p}],
                    "output_config": {"format": {"type": "json_schema", "schema": schema}}}}
                for i, p in enumerate(prompts)
            ]  # type: ignore[list-item]
        )  # fmt: skip
        while client.messages.batches.retrieve(batch.id).processing_status != "ended":
            time.sleep(0.05)
        results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
        elapsed = time.perf_counter() - start
    tokens, replies = 0, []
    for i in range(len(prompts)):
        result = results[f"doc-{i}"]
        if result.type == "succeeded":
            tokens += result.message.usage.output_tokens
            replies.append(parse(result.message.content[0].text))  # type: ignore[union-attr]
        else:
            replies.append(None)
    return {"elapsed": elapsed, "tokens": tokens, "n": len(prompts), "replies": replies, "workers": cores}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=6, help="invoices to send per configuration")
    parser.add_argument("--max-tokens", type=int, default=320)
    args = parser.parse_args()
    prompts, schema, expected = load(args.n)
    print(f"{args.n} invoices, max_tokens {args.max_tokens}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    rows = {
        "direct/per-worker": direct("per-worker", prompts, schema, args.max_tokens),
        "direct/shared": direct("shared", prompts, schema, args.max_tokens),
        "serve/batch": served(prompts, schema, args.max_tokens),
    }
    base = rows["direct/per-worker"]
    head = ("how", "workers", "seconds", "out tok", "tok/s", "req/min", "vs direct", "fields ok")
    print(f"{head[0]:<20}" + "".join(f"{h:>{w}}" for h, w in zip(head[1:], (8, 9, 9, 8, 9, 11, 11), strict=True)))
    for name, r in rows.items():
        tps = r["tokens"] / r["elapsed"]
        rpm = r["n"] / r["elapsed"] * 60
        ratio = r["elapsed"] / base["elapsed"]
        ok = right_fields(r["replies"], expected)
        print(
            f"{name:<20}{r['workers']:>8}{r['elapsed']:>9.1f}{r['tokens']:>9}{tps:>8.1f}{rpm:>9.1f}{ratio:>10.2f}x{ok:>10.0%}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
