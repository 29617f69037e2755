"""freight's overhead against the bare SDK, on the same server and the same prompts.

    python bench/throughput.py [--n 10000] [--provider anthropic|openai] [--max-tokens 64] [--db postgresql://...]

Each client gets a fresh `freight serve --engine scripted --time-scale 0.0001 --faults window=1000000000` (a window
that never closes) in its own process, and a fresh store:
  bare SDK     a script of its own: one `batches.create` of all N requests (OpenAI: one file and batch per 50,000,
               the API's limit), poll every 0.5 s, stream results; timed from launch to exit, as `freight run` is
               (both start Python and import the SDK; the script's own figure after the import is printed too)
  freight run  N generated documents (a JSONL), `--no-sample --poll-interval 0.5`, model claude-haiku-4-5 (OpenAI:
               gpt-4o-mini), both priced, so the cost path is measured too
and prints wall time, the ratio to the bare SDK, freight's peak RSS (from getrusage of the finished child) and
freight's time by phase, read from the job's events in its store. The server is the same for both clients, so the
difference is freight's own work. The machine's other load moves these figures: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from freight.server.testing import LocalServer
from freight.store import Store

MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o-mini"}
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
PROMPT = "Reply with one short sentence about this note.\n\n{document}"


def text(i: int) -> str:
    return f"Note {i}: the shipment for order {i * 7919 % 100003} left the warehouse on day {i % 365}."


def server(root: Path, name: str) -> LocalServer:
    return LocalServer(
        root / f"serve-{name}.db", time_scale=0.0001, faults="window=1000000000", subprocess=True, workers=4
    )


def bare_anthropic(api_key: str, base_url: str, n: int, max_tokens: int) -> float:
    import anthropic

    client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0)
    t0 = time.monotonic()
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": f"doc-{i:06d}",
                "params": {
                    "model": MODELS["anthropic"],
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": PROMPT.replace("{document}", text(i))}],
                },
            }
            for i in range(n)
        ]
    )
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        time.sleep(0.5)
    got = sum(1 for _ in client.messages.batches.results(batch.id))
    assert got == n, f"the bare SDK got {got} results of {n}"
    return time.monotonic() - t0


def bare_openai(api_key: str, base_url: str, n: int, max_tokens: int) -> float:
    """All N in as few batches as OpenAI allows (50,000 requests a batch), created one after the other, then polled
    together; every output file read."""
    import openai

    client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    t0 = time.monotonic()
    ids = []
    for first in range(0, n, OPENAI_MAX):
        lines = "".join(
            json.dumps(
                {
                    "custom_id": f"doc-{i:06d}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": MODELS["openai"],
                        "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": PROMPT.replace("{document}", text(i))}],
                    },
                }
            )
            + "\n"
            for i in range(first, min(n, first + OPENAI_MAX))
        )
        f = client.files.create(file=("batch.jsonl", lines.encode()), purpose="batch")
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        ids.append(batch.id)
    got = 0
    for batch_id in ids:
        while (batch := client.batches.retrieve(batch_id)).status not in ENDED:
            time.sleep(0.5)
        assert batch.output_file_id, f"the batch ended {batch.status} with no output file"
        got += sum(1 for line in client.files.content(batch.output_file_id).text.splitlines() if line.strip())
    assert got == n, f"the bare SDK got {got} results of {n}"
    return time.monotonic() - t0


OPENAI_MAX = 50_000  # requests in one OpenAI batch
ENDED = ("completed", "failed", "expired", "cancelled")


BARE = {"anthropic": bare_anthropic, "openai": bare_openai}


def run_bare(srv: LocalServer, root: Path, provider: str, n: int, max_tokens: int) -> tuple[float, float, float]:
    """The bare SDK as a program of its own, as a user would run it: (wall time from launch to exit, the part after
    `import`, its peak RSS in MB). freight run is timed the same way, so both pay the interpreter and the SDK's
    import."""
    args = [sys.executable, __file__, "--bare-child", provider, "--n", str(n), "--max-tokens", str(max_tokens)]
    env = {**os.environ, "BENCH_KEY": srv.api_key, "BENCH_URL": srv.url_for(provider)}
    wall, rss, out = _timed(args, env, root / "bare.log")
    return wall, float(out.strip().splitlines()[-1]), rss


def _timed(args: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Run a program to its end: (wall seconds, its own peak RSS in MB, what it printed). Reaped here, for the
    child's own peak RSS (KiB on Linux): RUSAGE_CHILDREN would report the largest of all children so far."""
    with log.open("w") as out:
        t0 = time.monotonic()
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{args[1:4]} exited {code}:\n{log.read_text()[-3000:]}")
    return wall, usage.ru_maxrss / 1024, log.read_text()


def run_freight(
    srv: LocalServer, root: Path, provider: str, n: int, max_tokens: int, store_url: str | None
) -> tuple[float, float, str]:
    docs = root / "docs.jsonl"
    with docs.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"doc-{i:06d}", "text": text(i)}) + "\n")
    db = store_url or str(root / "freight.db")
    args = [
        sys.executable, "-m", "freight", "run", str(docs), "--prompt-text", PROMPT, "--no-sample",
        "--poll-interval", "0.5", "--provider", provider, "--model", MODELS[provider],
        "--max-tokens", str(max_tokens), "--base-url", srv.url_for(provider), "--db", db,
        "--out", str(root / "out"),
    ]  # fmt: skip
    env = {**os.environ, KEY_ENV[provider]: srv.api_key}
    wall, rss, _ = _timed(args, env, root / "freight-run.log")
    return wall, rss, db


def phases(db: str, wall: float, t_start: float) -> list[tuple[str, float]]:
    """freight's time by phase, from its own events: each phase from its first event to its last."""
    store = Store(db)
    job = max(store.list_jobs(), key=lambda j: j.created_at or datetime.min)  # a shared store holds earlier runs
    evs = store.events(job.job_id)

    def at(e: dict[str, Any]) -> float:
        t: datetime = e["at"]
        return t.timestamp()

    kinds: dict[str, list[float]] = {}
    for e in evs:
        kind = e["kind"]
        if kind == "batch.state" and e["data"].get("new") in ("ended", "completed"):
            kind = "batch.ended"
        kinds.setdefault(kind, []).append(at(e))
    created = kinds["job.created"][0]
    prepared, submitted = kinds.get("batch.prepared", [created]), kinds.get("batch.submitted", [created])
    ended = kinds.get("batch.ended", submitted)
    ingested = kinds.get("batch.ingested", ended)
    finished = kinds.get("job.state", [ingested[-1]])[-1]
    return [
        ("start, read and record inputs", created - t_start + (prepared[0] - created)),
        ("pack and submit", submitted[-1] - prepared[0]),
        ("wait for the provider (poll)", max(0.0, ended[-1] - submitted[-1])),
        ("ingest and settle", ingested[-1] - ended[0]),
        ("write outputs, exit", t_start + wall - finished),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--provider", choices=sorted(MODELS), default="anthropic")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--db", help="freight's store (default: a fresh SQLite file), e.g. postgresql://127.0.0.1/test")
    ap.add_argument("--bare-child", choices=sorted(MODELS), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.bare_child:
        print(BARE[a.bare_child](os.environ["BENCH_KEY"], os.environ["BENCH_URL"], a.n, a.max_tokens))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bare").mkdir()
        (root / "freight").mkdir()
        with server(root / "bare", "bare") as srv:
            floor, after_import, bare_rss = run_bare(srv, root / "bare", a.provider, a.n, a.max_tokens)
        with server(root / "freight", "freight") as srv:
            t_start = time.time()
            wall, rss, db = run_freight(srv, root / "freight", a.provider, a.n, a.max_tokens, a.db)
        split = phases(db, wall, t_start)
    print(f"{a.n:,} requests, {a.provider}, max_tokens {a.max_tokens}, store {'PostgreSQL' if a.db else 'SQLite'}")
    print("| client | wall time | vs the bare SDK | peak RSS |")
    print("|---|---|---|---|")
    print(f"| the bare {a.provider} SDK (a script: launch to exit) | {floor:.1f} s | 1.0x | {bare_rss:.0f} MB |")
    print(f"| `freight run` | {wall:.1f} s | {wall / floor:.2f}x | {rss:.0f} MB |")
    print(f"the bare SDK's script spent {floor - after_import:.1f} s starting Python and importing the SDK")
    print("freight by phase: " + ", ".join(f"{name} {secs:.1f} s" for name, secs in split))


if __name__ == "__main__":
    main()
