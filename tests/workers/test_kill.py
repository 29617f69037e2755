"""The Done-when test: three jobs, four worker processes sharing one PostgreSQL store, workers SIGKILLed at random
points while they hold jobs and replaced. Every document ends with exactly one final outcome, every request is
settled, and freight serve's own records show no custom_id received twice: nothing was submitted twice.

The kills wait on observable progress (more documents settled since the last kill), never on the clock, so they land
throughout the run however loaded the machine is; the seed is printed so a failure can be replayed."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from freight.domain import JobState
from freight.server.testing import LocalServer
from freight.store import Store
from freight.store.schema import batches, items, requests

from .conftest import cli, env_for, start_worker, write_docs

# The OpenAI dialect: its batches carry freight's reference in their metadata, so a worker killed between submitting
# a batch and recording the answer is followed by one that finds that very batch. (Anthropic's batches carry none:
# there, batches of the same size sent by two workers both killed mid-submission cannot be told apart, and the job
# stops rather than guess - see test_adoption.py.)
PROMPT = ["--prompt-text", "Extract.\n{document}", "-m", "scripted", "--allow-unpriced", "--provider", "openai"]


def _settled(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(items.c.state == "succeeded")).scalar_one())


def _holders(store: Store) -> set[int]:
    """Workers holding a job, or a batch of one (polling or ingesting it for the job's holder)."""
    return {w.pid for w in store.list_workers() if w.claims or w.batches}


def _chaos(tmp_path: Path, pg_url: str, sizes: list[int], kills: int, batch_size: int) -> None:
    seed = int(os.environ.get("FREIGHT_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"chaos seed {seed} (FREIGHT_CHAOS_SEED={seed} replays the choice of victims)")
    rng = random.Random(seed)
    total = sum(sizes)
    # A window that never closes: on a loaded machine a batch must not expire (that is another test's subject). Each
    # batch takes 1 to 6 s (latency, at this time scale), so on a quiet machine too the jobs settle step by step and
    # the kills land while they run, rather than after a burst that ends everything between two looks.
    with LocalServer(
        tmp_path / "serve.db", engine="scripted", time_scale=0.0002, subprocess=True,
        faults=f"window=1000000000,latency=uniform:5000,30000,seed={seed}",
    ) as srv:  # fmt: skip
        env = env_for(srv.api_key, tmp_path / "home")
        jobs = []
        for n, size in enumerate(sizes):
            docs = write_docs(tmp_path / f"docs{n}.jsonl", f"j{n}", size)
            sub = cli(
                env, "submit", str(docs), *PROMPT, "--base-url", srv.openai_base_url, "--db", pg_url,
                "--batch-size", str(batch_size),
            )  # fmt: skip
            assert sub.returncode == 0, sub.stderr
            jobs.append(sub.stdout.strip())
        log = tmp_path / "workers.log"
        extra = ("--lease-ttl", "10")
        pool = [start_worker(env, pg_url, *extra, log=log) for _ in range(4)]
        killed = 0
        try:
            with Store(pg_url) as store:
                last = 0
                deadline = time.monotonic() + 1200
                while True:
                    states = {store.get_job(j).state for j in jobs}  # type: ignore[union-attr]
                    if states == {JobState.COMPLETED}:
                        break
                    assert JobState.STOPPED not in states, log.read_text()[-4000:]
                    assert time.monotonic() < deadline, log.read_text()[-4000:]
                    now = _settled(store)
                    victims = [p for p in pool if p.pid in _holders(store)]
                    if killed < kills and now > last and victims and now < total:
                        time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside the step in hand: anywhere is fair
                        victim = rng.choice(victims)
                        victim.send_signal(signal.SIGKILL)
                        victim.wait(30)
                        pool[pool.index(victim)] = start_worker(env, pg_url, *extra, log=log)
                        killed += 1
                        last = now
                    time.sleep(0.1)
                # A replacement still starting has no SIGTERM handler yet: wait until each has registered.
                while not {p.pid for p in pool} <= {w.pid for w in store.list_workers()}:
                    assert time.monotonic() < deadline, log.read_text()[-4000:]
                    time.sleep(0.1)
            for p in pool:
                p.send_signal(signal.SIGTERM)
            assert [p.wait(120) for p in pool] == [0] * 4, log.read_text()[-4000:]
        finally:
            for p in pool:
                if p.poll() is None:
                    p.kill()
                    p.wait(30)
        sent = Counter(r["custom_id"] for r in srv.records() if r["batch_id"])
    twice = [cid for cid, n in sent.items() if n > 1]
    assert twice == [], f"submitted twice: {twice[:10]}"
    # Kills wait on observed progress, so on a fast machine the last ones may find the jobs done: at least one must
    # have landed mid-run, and its claim must have been taken over (below).
    assert killed >= 1, "no kill landed: the jobs ended first"
    with Store(pg_url) as store:
        for job_id, size in zip(jobs, sizes, strict=True):
            assert store.item_counts(job_id) == {"succeeded": size}
        with store.engine.connect() as conn:
            no_output = conn.execute(sa.select(sa.func.count()).where(items.c.output.is_(None))).scalar_one()
            states = Counter(s for (s,) in conn.execute(sa.select(requests.c.state)))
            open_batches = conn.execute(sa.select(sa.func.count()).where(batches.c.ingested_at.is_(None))).scalar_one()
        # Every request has its one outcome acted on; none waits on a batch nobody will poll.
        assert set(states) == {"settled"}, states
        assert open_batches == 0
        assert no_output == 0  # every succeeded document has its validated output
        assert len(sent) == states["settled"]  # every request the store holds was received, once
        taken_over = [e for j in jobs for e in store.events(j, kind="lease.taken_over")]
        taken_over += [e for j in jobs for e in store.events(j, kind="batch.claimed") if "taken_over_from" in e["data"]]
        assert taken_over, "no killed worker's claim was ever taken over"
        for job_id in jobs:  # each batch's results taken in once, whoever was killed halfway through
            ingested = Counter(e["data"]["batch"] for e in store.events(job_id, kind="batch.ingested"))
            assert ingested == Counter({b["id"]: 1 for b in store.batches(job_id)}), ingested


def test_killed_workers_lose_nothing_and_submit_nothing_twice(tmp_path: Path, pg_url: str) -> None:
    _chaos(tmp_path, pg_url, [200, 150, 150], kills=2, batch_size=50)


def test_one_job_four_workers_killed_at_random_holder_or_helper(tmp_path: Path, pg_url: str) -> None:
    # One job: one worker holds it, the three others poll and ingest its batches; any of them may be killed.
    _chaos(tmp_path, pg_url, [500], kills=3, batch_size=25)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_ten_thousand_documents_three_jobs_four_workers_killed_at_random(tmp_path: Path, pg_url: str) -> None:
    _chaos(tmp_path, pg_url, [4000, 3000, 3000], kills=8, batch_size=500)
