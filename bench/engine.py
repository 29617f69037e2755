"""How fast the local engine is in each layout, and how right: the quickstart's invoices, sent as the quickstart sends
them (examples/invoices/prompt.txt + schema.json, the README's max_tokens, the engine's default temperature).

    .venv/bin/python bench/engine.py [--n 30] [--max-tokens 128] [--layouts per-corex8,per-corex1,...,serve]

Layouts (docs/engines.md explains them), POOLxN with N the sequences each llama.cpp context decodes together:
  per-corex1   one context per core, one thread each, one request at a time each
  sharedx1     one context using every core's thread, one request at a time
  sharedxN     one context using every core, N requests decoded together (continuous batching)
  per-corexN   one single-threaded context per core, each decoding N requests together (per-corex8: the default)
  serve        the engine's default layout behind `freight serve`, as an Anthropic batch through the official SDK
               (create, poll, results): the server's overhead
Each direct layout gets every request at once from as many threads as it decodes sequences, like the server's
workers. Printed per layout: seconds, the engine's CPU seconds (direct layouts), generated tokens, tokens/s,
requests/minute, the share of the five scalar fields right against examples/invoices/expected.jsonl
(examples/invoices/check.py counts them, as CI does), and whether the replies are byte-identical to the first
layout's (same seeds, same model: they should be).
The machine's other load moves the speed figures: the ratios between layouts are the point; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
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
DEFAULT_MAX_TOKENS = 128  # what the README's first command passes


def _check_module() -> Any:
    spec = importlib.util.spec_from_file_location("invoice_check", CORPUS / "check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _check_module()


def load(n: int) -> tuple[list[str], list[str], dict[str, Any]]:
    template = (CORPUS / "prompt.txt").read_text(encoding="utf-8")
    schema = json.loads((CORPUS / "schema.json").read_text(encoding="utf-8"))
    ids = sorted(check.expected_by_id())[:n]
    prompts = [template.replace("{document}", (CORPUS / "docs" / f"{i}.txt").read_text(encoding="utf-8")) for i in ids]
    return ids, prompts, schema


def parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def direct(layout: str, prompts: list[str], schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    from freight.domain import Message, Request
    from freight.server.engines.local import LocalEngine

    pool, _, slots = layout.partition("x")
    engine = LocalEngine(pool=pool, slots=int(slots or 1))  # type: ignore[arg-type]
    requests = [
        Request(custom_id=f"doc-{i}", model="smollm2-135m", max_tokens=max_tokens,
                messages=[Message(role="user", content=p)], output_schema=schema)
        for i, p in enumerate(prompts)
    ]  # fmt: skip
    engine.complete(Request(custom_id="warm", model="m", max_tokens=4, messages=[Message(role="user", content="hi")]))
    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=engine.workers) as ex:
        outs = list(ex.map(engine.complete, requests))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    engine.close()
    texts = [o.text if o.status == "succeeded" else "" for o in outs]
    tokens = sum(o.usage.output_tokens for o in outs if o.status == "succeeded")
    cut = sum(o.status == "succeeded" and o.stop_reason.value == "max_tokens" for o in outs)
    return {"elapsed": elapsed, "cpu": cpu, "tokens": tokens, "texts": texts, "workers": engine.workers, "cut": cut}


def served(prompts: list[str], schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    import anthropic

    from freight.server.testing import LocalServer

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalServer(Path(tmp) / "bench.db", engine="local", time_scale=0.0001) as srv,
    ):
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=2, timeout=300)
        client.messages.create(model="m", max_tokens=4, messages=[{"role": "user", "content": "hi"}])  # warm up
        start = time.perf_counter()
        batch = client.messages.batches.create(
            requests=[
                {"custom_id": f"doc-{i}", "params": {
                    "model": "smollm2-135m", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": p}],
                    "output_config": {"format": {"type": "json_schema", "schema": schema}}}}
                for i, p in enumerate(prompts)
            ]  # type: ignore[list-item]
        )  # fmt: skip
        while client.messages.batches.retrieve(batch.id).processing_status != "ended":
            time.sleep(0.05)
        results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
        elapsed = time.perf_counter() - start
    tokens, texts, cut = 0, [], 0
    for i in range(len(prompts)):
        result = results[f"doc-{i}"]
        if result.type == "succeeded":
            tokens += result.message.usage.output_tokens
            cut += result.message.stop_reason == "max_tokens"
            texts.append(result.message.content[0].text)  # type: ignore[union-attr]
        else:
            texts.append("")
    return {"elapsed": elapsed, "tokens": tokens, "texts": texts, "workers": srv.workers, "cut": cut}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=30, help="invoices to send per layout (the example has 30)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--layouts", default="per-corex8,per-corex1,per-corex4,sharedx8,serve")
    args = parser.parse_args()
    ids, prompts, schema = load(args.n)
    expected = {k: v for k, v in check.expected_by_id().items() if k in ids}
    print(f"{len(ids)} invoices, max_tokens {args.max_tokens}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    head = ("layout", "seqs", "seconds", "cpu s", "out tok", "tok/s", "req/min", "cut", "fields ok", "same replies")
    widths = (12, 6, 9, 8, 9, 8, 9, 5, 14, 14)
    print("".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    first: list[str] | None = None
    for layout in args.layouts.split(","):
        r = (
            served(prompts, schema, args.max_tokens)
            if layout == "serve"
            else direct(layout, prompts, schema, args.max_tokens)
        )
        right, total = check.field_accuracy(dict(zip(ids, map(parse, r["texts"]), strict=True)), expected)
        first = first if first is not None else r["texts"]
        same = (
            "yes"
            if r["texts"] == first
            else f"{sum(a == b for a, b in zip(r['texts'], first, strict=True))}/{len(ids)}"
        )
        rate, per_minute = r["tokens"] / r["elapsed"], len(ids) / r["elapsed"] * 60
        fields = f"{right / total:.0%} ({right}/{total})"
        cpu = f"{r['cpu']:.1f}" if "cpu" in r else "-"  # the served layout's engine runs in another process
        cells = (layout, r["workers"], f"{r['elapsed']:.1f}", cpu, r["tokens"], f"{rate:.1f}", f"{per_minute:.1f}")
        cells += (r["cut"],)
        cells += (fields, same)
        print(
            "".join(
                f"{c!s:<{w}}" if i == 0 else f"{c!s:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        sys.stdout.flush()
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
