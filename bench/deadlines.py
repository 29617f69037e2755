"""Deadlines kept against a heavy-tailed batch latency: no hedging vs hedging.

    python bench/deadlines.py [--jobs 50] [--docs 4] [--scale 0.0005] [--deadline-h 20] [--margin 4]

Each run gets a fresh `freight serve` (scripted engine, its own process) replaying the same bad night -
`--faults latency=tail:3600,1.0,stall=0.04,seed=7`: batch durations Pareto-distributed from 1 h (median 2 h, one in
18 over 18 h), and 4 % of the batches stalling part-way until the 24 h window closes - and a fresh store. The draws
are keyed by each batch's content, so both runs meet the same latencies. `--jobs` jobs of `--docs` documents each
start together, each with a deadline `--deadline-h` emulated hours later (20 h: inside the 24 h window, as an SLA of
a day leaves it); time runs `--scale` x real (0.0005: 20 h last 36 s). One thread moves every job one step per round
(`Runner.step`, as `freight schedule` does).

  no hedging  the jobs run in batch; a job not completed at its deadline missed it (the run stops there)
  hedging     the same with `--deadline`: at deadline - sync time - `--margin` real seconds, what a job's batch has
              not finished is canceled and sent synchronously (runner/hedge.py)

Printed per row: the share of deadlines met, and the share of the batch discount kept (what was saved against the
synchronous price, over what sending every answered document by batch would have saved), with the counts behind them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from freight.domain import JobState, Usage
from freight.plan.pricing import Pricer
from freight.providers import get_provider
from freight.runner.hedge import HedgePolicy
from freight.runner.job import RunOptions, open_job
from freight.runner.loop import Runner
from freight.server.testing import LocalServer
from freight.store import Store

MODEL = "claude-haiku-4-5"
FAULTS = "latency=tail:3600,1.0,stall=0.04,seed=7"


def make_inputs(root: Path, jobs: int, docs: int) -> list[Path]:
    paths = []
    for j in range(jobs):
        path = root / f"job{j:02d}.jsonl"
        path.write_text(
            "".join(f'{{"id": "j{j:02d}-d{d}", "text": "vendor: V{j}-{d}\\ntotal: {d}"}}\n' for d in range(docs))
        )
        paths.append(path)
    return paths


def run(label: str, root: Path, args: argparse.Namespace, hedge: bool) -> tuple[str, dict[str, float]]:
    work = root / label
    work.mkdir()
    inputs = make_inputs(work, args.jobs, args.docs)
    with LocalServer(work / "serve.db", time_scale=args.scale, faults=FAULTS, subprocess=True) as srv:
        store = Store(str(work / "freight.db"))
        provider = get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key)
        start = time.time()
        deadline = start + args.deadline_h * 3600 * args.scale
        runners: dict[str, Runner] = {}
        for path in inputs:
            opts = RunOptions(
                input=str(path), provider="anthropic", model=MODEL, prompt="Extract the vendor.\n\n{document}",
                base_url=srv.base_url, deadline=datetime.fromtimestamp(deadline, UTC).isoformat(),
            )  # fmt: skip
            job, _ = open_job(store, opts)
            store.set_job_state(job.job_id, JobState.RUNNING)
            policy = (
                HedgePolicy(datetime.fromtimestamp(deadline, UTC), margin_s=args.margin, sync_seconds=0.3)
                if hedge
                else None
            )
            runners[job.job_id] = Runner(store, provider, job.job_id, opts, hedge=policy)
        finished: dict[str, float] = {}
        while len(finished) < len(runners) and (hedge or time.time() < deadline):
            for job_id, runner in runners.items():
                if job_id in finished:
                    continue
                runner.step()
                if runner._finished():
                    store.set_job_state(job_id, JobState.COMPLETED)
                    finished[job_id] = time.time()
            time.sleep(0.05)
        met = sum(1 for at in finished.values() if at <= deadline)
        pricer = Pricer.load()
        sync_price = pricer.cost(MODEL, Usage(input_tokens=10**6, output_tokens=10**6), False) or 1.0
        batch_price = pricer.cost(MODEL, Usage(input_tokens=10**6, output_tokens=10**6), True) or 1.0
        discount = 1 - batch_price / sync_price
        saved = potential = 0.0
        answered = by_sync = 0
        for job_id in runners:
            for row in store.request_paths(job_id):
                if row["status"] != "succeeded":
                    continue
                answered += 1
                by_sync += row["mode"] == "sync"
                saved += row["sync_cost_usd"] - row["cost_usd"]
                potential += row["sync_cost_usd"] * discount
        store.close()
    figures = {
        "met": met / len(runners),
        "kept": saved / potential if potential else 0.0,
        "answered": answered,
        "by_sync": by_sync,
        "wall": time.time() - start,
    }
    return label, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--scale", type=float, default=0.0005)
    parser.add_argument("--deadline-h", type=float, default=20.0)
    parser.add_argument("--margin", type=float, default=4.0, help="the hedge's margin, real seconds")
    args = parser.parse_args()
    total = args.jobs * args.docs
    print(f"{args.jobs} jobs x {args.docs} documents, deadline {args.deadline_h:g} h, faults {FAULTS}, "
          f"time scale {args.scale:g} ({args.deadline_h * 3600 * args.scale:.0f} s real to the deadline)")  # fmt: skip
    print(f"{'':12} {'deadlines met':>14} {'discount kept':>14} {'answered':>9} {'by sync':>8} {'wall':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, hedge in (("no hedging", False), ("hedging", True)):
            name, f = run(label.replace(" ", "-"), Path(tmp), args, hedge)
            print(
                f"{label:12} {f['met']:>14.0%} {f['kept']:>14.0%} {int(f['answered']):>5}/{total:<3} "
                f"{int(f['by_sync']):>8} {f['wall']:>6.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
