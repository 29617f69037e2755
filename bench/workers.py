"""Worker processes sharing one PostgreSQL store: 1, 2 and 4 `freight worker`s on the same documents.

    python bench/workers.py [--n 100000] [--jobs 1,4] [--workers 1,2,4] [--batch-size 5000]

For each worker count: a fresh schema in the test database (FREIGHT_TEST_PG, default
postgresql://postgres@127.0.0.1:5432/test), a fresh `freight serve --engine scripted` in its own process (a window that
never closes), N generated documents submitted as `--jobs` jobs of equal size (`freight submit`, not timed), then the
workers started with `--exit-when-idle` and timed until the last one exits. Prints wall time, requests/s, the store's
queries per request (every statement the workers sent, counted by a SQLAlchemy hook in each worker process) and the
peak RSS of a worker (from wait4 of each one).

Each `--jobs` count is its own table: `--jobs 1` is one big job, where the job's holder packs and submits and every
worker polls and ingests its batches (step claims, store/claims.py); with 4 jobs each worker can also hold one. The
"ingested by" column counts the workers that ingested at least one batch. The machine's other load moves these
figures (the workers, freight serve and PostgreSQL share its cores): compare runs side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from freight.server.testing import LocalServer

PG_URL = os.environ.get("FREIGHT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PROMPT = "Reply with one short sentence about this note.\n\n{document}"
COUNT_ENV = "FREIGHT_BENCH_QUERY_FILE"


def counted_worker() -> None:
    """Run `freight worker ...` in this process, counting every statement it sends to the store."""
    import atexit

    from freight.cli import main

    sent = [0]

    def count(*_: object) -> None:
        sent[0] += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    atexit.register(lambda: Path(os.environ[COUNT_ENV]).write_text(str(sent[0])))
    sys.argv = ["freight", *sys.argv[2:]]
    main()


def text(i: int) -> str:
    return f"Note {i}: the shipment for order {i * 7919 % 100003} left the warehouse on day {i % 365}."


def one(root: Path, n: int, jobs: int, workers: int, batch_size: int) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine("postgresql+psycopg://" + PG_URL.split("://", 1)[1])
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    db = f"{PG_URL}?options=-csearch_path%3D{schema}"
    here = Path(tempfile.mkdtemp(prefix=f"w{workers}-", dir=root))  # a count may be given twice: --workers 1,4,1
    try:
        with LocalServer(
            here / "serve.db", time_scale=0.0001, faults="window=1000000000", subprocess=True, workers=4
        ) as srv:
            env = {**os.environ, "ANTHROPIC_API_KEY": srv.api_key, "FREIGHT_HOME": str(here / "home")}
            per = n // jobs
            for j in range(jobs):
                docs = here / f"docs{j}.jsonl"
                with docs.open("w") as f:
                    for i in range(j * per, n if j == jobs - 1 else (j + 1) * per):
                        f.write(json.dumps({"id": f"doc-{i:07d}", "text": text(i)}) + "\n")
                subprocess.run(
                    [
                        sys.executable, "-m", "freight", "submit", str(docs), "--prompt-text", PROMPT,
                        "-m", "claude-haiku-4-5", "--base-url", srv.base_url, "--db", db,
                        "--batch-size", str(batch_size), "--max-tokens", "64",
                    ],
                    env=env, check=True, capture_output=True,
                )  # fmt: skip
            t0 = time.monotonic()
            procs = []
            for k in range(workers):
                wenv = {**env, COUNT_ENV: str(here / f"queries-{k}")}
                args = [sys.executable, __file__, "--as-worker", "worker", "--db", db, "--exit-when-idle"]
                args += ["--poll-interval", "0.5", "--idle-poll", "0.5"]
                log = (here / f"worker-{k}.log").open("w")
                procs.append(subprocess.Popen(args, env=wenv, stdout=log, stderr=log))
            peak_kb = 0
            for p in procs:
                _, status, usage = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                peak_kb = max(peak_kb, usage.ru_maxrss)
                if p.returncode != 0:
                    raise SystemExit(f"a worker exited {p.returncode}: see {here}")
            wall = time.monotonic() - t0
            requests = sum(1 for r in srv.records() if r["batch_id"])
        queries = sum(int((here / f"queries-{k}").read_text()) for k in range(workers))
        with admin.connect() as conn:
            ingesters = conn.exec_driver_sql(
                f"SELECT count(DISTINCT split_part(ingested_by, '/', 1)) FROM {schema}.batches"
            ).scalar_one()
            n_batches = conn.exec_driver_sql(f"SELECT count(*) FROM {schema}.batches").scalar_one()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
    return {
        "wall": wall,
        "requests": requests,
        "queries": queries,
        "peak_rss_mb": peak_kb / 1024,
        "ingesters": ingesters,
        "batches": n_batches,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-worker":
        counted_worker()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--jobs", default="1,4", help="Job counts, one table each (1: one big job).")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--batch-size", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="freight-bench-workers-") as tmp:
        for jobs in (int(x) for x in args.jobs.split(",")):
            what = "one job" if jobs == 1 else f"{jobs} jobs"
            print(f"\n{args.n:,} documents in {what}, batches of at most {args.batch_size:,}; scripted engine")
            print(
                f"{'workers':>7}  {'wall s':>8}  {'req/s':>8}  {'queries/request':>15}  {'peak RSS of a worker':>20}"
                f"  {'ingested by':>11}"
            )
            for workers in (int(x) for x in args.workers.split(",")):
                root = Path(tmp) / f"j{jobs}"
                root.mkdir(exist_ok=True)
                r = one(root, args.n, jobs, workers, args.batch_size)
                print(
                    f"{workers:>7}  {r['wall']:>8.1f}  {r['requests'] / r['wall']:>8.0f}  "
                    f"{r['queries'] / max(1, r['requests']):>15.2f}  {r['peak_rss_mb']:>17.0f} MB"
                    f"  {r['ingesters']:>3} of {workers} ({r['batches']} batches)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
