"""Step claims: one job advanced by several worker processes at once. Its holder packs and submits; every worker
polls and ingests its batches, each batch claimed by one worker at a time. Every batch is ingested exactly once (the
store's events), by the worker recorded on it; a worker SIGKILLed mid-ingest loses its claim when its heartbeat
expires and another takes the batch over; every document ends with exactly one final outcome, and freight serve's
records show no custom_id sent twice."""

from __future__ import annotations

import signal
import subprocess as sp
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from freight.domain import JobState
from freight.server.testing import LocalServer
from freight.store import Store
from freight.store.schema import outcomes, requests

from . import held
from .conftest import cli, env_for, start_worker, write_docs
from .test_worker_cli import _wait_for

PROMPT = ["--prompt-text", "Extract.\n{document}", "-m", "scripted", "--allow-unpriced"]


def _registered(pg_url: str, pool: list[sp.Popen[str]]) -> bool:
    with Store(pg_url) as store:
        return {p.pid for p in pool} <= {w.pid for w in store.list_workers()}


def _state(pg_url: str, job_id: str) -> JobState:
    with Store(pg_url) as store:
        return store.get_job(job_id).state  # type: ignore[union-attr]


def _stop_all(pool: list[sp.Popen[str]]) -> None:
    for p in pool:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in pool:
        try:
            p.wait(60)
        except sp.TimeoutExpired:
            p.kill()
            p.wait(30)


def _worker_ids(store: Store) -> dict[int, str]:
    """pid -> worker id, from the workers' own `worker.started` events."""
    return {e["data"]["pid"]: e["data"]["worker"] for e in store.events(kind="worker.started")}


def _exactly_once(store: Store, job_id: str, size: int) -> None:
    """Every batch ingested once, by the worker recorded on it; every document one final outcome."""
    batches = store.batches(job_id)
    ingested = Counter(e["data"]["batch"] for e in store.events(job_id, kind="batch.ingested"))
    assert ingested == Counter({b["id"]: 1 for b in batches}), ingested
    assert all(b["ingested_by"] for b in batches), [(b["id"], b["ingested_by"]) for b in batches]
    assert store.item_counts(job_id) == {"succeeded": size}
    with store.engine.connect() as conn:
        n_outcomes = conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one()
        states = Counter(s for (s,) in conn.execute(sa.select(requests.c.state)))
    assert states == {"settled": n_outcomes}  # one outcome per request, each acted on


def test_one_job_is_ingested_by_several_workers_each_batch_once(tmp_path: Path, pg_url: str) -> None:
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 240)
    log = tmp_path / "workers.log"
    # Batches of 0.5 to 3 s, ending one after another: while the holder waits or ingests, the others take the rest.
    faults = "window=1000000000,latency=uniform:2500,15000,seed=7"
    with LocalServer(
        tmp_path / "serve.db", engine="scripted", time_scale=0.0002, subprocess=True, faults=faults
    ) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        pool = [start_worker(env, pg_url, "--lease-ttl", "10", log=log) for _ in range(3)]
        try:
            _wait_for("three workers", lambda: _registered(pg_url, pool))
            sub = cli(
                env, "submit", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url, "--batch-size", "20"
            )
            assert sub.returncode == 0, sub.stderr
            job_id = sub.stdout.strip()
            _wait_for("the job to complete", lambda: _state(pg_url, job_id).terminal, timeout=300)
            assert _state(pg_url, job_id) is JobState.COMPLETED, log.read_text()[-3000:]
        finally:
            _stop_all(pool)
        sent = Counter(r["custom_id"] for r in srv.records() if r["batch_id"])
    assert [p.returncode for p in pool] == [0, 0, 0], log.read_text()[-3000:]
    assert len(sent) == 240 and max(sent.values()) == 1
    with Store(pg_url) as store:
        _exactly_once(store, job_id, 240)
        batches = store.batches(job_id)
        assert len(batches) == 12
        # No batch was ingested by two workers: one ingest claim each, by the slot recorded as its ingester.
        claims = [e["data"] for e in store.events(job_id, kind="batch.claimed") if e["data"]["step"] == "ingest"]
        assert Counter(c["batch"] for c in claims) == Counter({b["id"]: 1 for b in batches})
        assert {c["batch"]: c["by"] for c in claims} == {b["id"]: b["ingested_by"] for b in batches}
        # The job was advanced by more than its holder: other workers ingested some of its batches.
        ingesters = {b["ingested_by"].split("/")[0] for b in batches}
        assert len(ingesters) >= 2, ingesters
        assert ingesters <= set(_worker_ids(store).values())
        # `freight status` says who ingested each batch, and who holds one now (a claim taken here, as a worker's).
        store.claim_batch(batches[0]["id"], "w-0123456789ab/0", 600, "poll")
    status = cli(env, "status", job_id, "--db", pg_url)
    lines = [ln for ln in status.stdout.splitlines() if ln.strip().startswith("batch ")]
    assert len(lines) == 12 and all("ingested by worker w-" in ln for ln in lines), status.stdout
    assert "held by worker w-0123456789ab/0" in lines[0], status.stdout


def test_a_worker_killed_mid_ingest_loses_its_batch_to_another_and_nothing_is_taken_twice(
    tmp_path: Path, pg_url: str
) -> None:
    held.install()
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 200)
    log = tmp_path / "workers.log"
    with LocalServer(tmp_path / "serve.db", engine=held.NAME, time_scale=0.0002) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        sub = cli(env, "submit", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url, "--batch-size", "10")
        job_id = sub.stdout.strip()
        ttl = ("--lease-ttl", "4")
        holder = start_worker(env, pg_url, *ttl, log=log)
        pool = [holder]
        try:
            # The engine holds every reply: all 20 batches are submitted and none can end until released.
            def all_submitted() -> bool:
                with Store(pg_url) as store:
                    found = store.batches(job_id)
                return len(found) == 20 and all(b["provider_batch_id"] for b in found)

            _wait_for("the holder to submit every batch", all_submitted)
            # Helpers join a job already held: one SIGKILLs itself after recording its first page of results, before
            # settling them or marking the batch ingested (FREIGHT_CRASH_AT, runner/crash.py).
            crasher = start_worker({**env, "FREIGHT_CRASH_AT": "ingest.page_recorded"}, pg_url, *ttl, log=log)
            pool += [crasher, start_worker(env, pg_url, *ttl, log=log)]
            _wait_for("the helpers", lambda: _registered(pg_url, pool))
            with Store(pg_url) as store:
                crasher_id = _worker_ids(store)[crasher.pid]
            held.release.set()
            _wait_for("the crashing helper to die mid-ingest", lambda: crasher.poll() is not None, timeout=300)
            assert crasher.returncode == -signal.SIGKILL, log.read_text()[-3000:]
            _wait_for("the job to complete", lambda: _state(pg_url, job_id).terminal, timeout=300)
            assert _state(pg_url, job_id) is JobState.COMPLETED, log.read_text()[-3000:]
        finally:
            held.release.set()
            _stop_all(pool)
        sent = Counter(r["custom_id"] for r in srv.records() if r["batch_id"])
    assert len(sent) == 200 and max(sent.values()) == 1
    with Store(pg_url) as store:
        _exactly_once(store, job_id, 200)
        claims = [e["data"] for e in store.events(job_id, kind="batch.claimed") if e["data"]["step"] == "ingest"]
        dead = [c["batch"] for c in claims if c["by"].startswith(crasher_id + "/")]
        assert len(dead) == 1, claims  # it died in its first ingest
        (lost,) = dead
        # Its claim expired with its heartbeat, and another worker took the batch over and finished the ingest.
        after = [c for c in claims if c["batch"] == lost and not c["by"].startswith(crasher_id + "/")]
        assert len(after) == 1 and after[0]["taken_over_from"].startswith(crasher_id + "/"), claims
        (row,) = [b for b in store.batches(job_id) if b["id"] == lost]
        assert row["ingested_by"] == after[0]["by"]
        # Every other batch: one ingest, by one worker.
        others = Counter(c["batch"] for c in claims if c["batch"] != lost)
        assert set(others.values()) == {1}
