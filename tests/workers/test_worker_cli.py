"""`freight submit`, `freight worker`, `freight workers` and `freight status` as a user runs them: real processes, a
private PostgreSQL schema, freight serve over loopback."""

from __future__ import annotations

import json
import signal
import subprocess as sp
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from freight.domain import JobState
from freight.server.testing import LocalServer
from freight.store import Store

from . import held
from .conftest import cli, env_for, freight, start_worker, write_docs

PROMPT = ["--prompt-text", "Extract.\n{document}", "-m", "scripted", "--allow-unpriced"]


@pytest.mark.parametrize("command", ["worker", "workers"])
def test_a_sqlite_store_is_one_machine_and_says_so(tmp_path: Path, command: str) -> None:
    result = cli(env_for("k", tmp_path / "home"), command, "--db", str(tmp_path / "f.db"))
    assert result.returncode == 2, result.stderr
    assert "needs a PostgreSQL store" in result.stderr and "freight run" in result.stderr
    assert "Traceback" not in result.stderr


def test_submit_refuses_sqlite_and_the_embedded_model(tmp_path: Path, pg_url: str) -> None:
    docs = write_docs(tmp_path / "docs.jsonl", "d", 3)
    env = env_for("", tmp_path / "home")
    on_sqlite = cli(env, "submit", str(docs), *PROMPT, "--base-url", "http://x", "--db", str(tmp_path / "f.db"))
    assert on_sqlite.returncode == 2 and "needs a PostgreSQL store" in on_sqlite.stderr
    # No key and no --base-url: the run would be on the embedded model, which lives in one process.
    embedded = cli(env, "submit", str(docs), "--prompt-text", "{document}", "--db", pg_url)
    assert embedded.returncode == 2, embedded.stderr
    assert "workers cannot share it" in embedded.stderr and "Traceback" not in embedded.stderr


def test_submit_runs_nothing_and_a_worker_carries_the_job_to_its_end(tmp_path: Path, pg_url: str) -> None:
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 40)
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        sub = cli(env, "submit", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url, "--priority", "3")
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.strip()
        assert "queued" in sub.stderr and "40 pending" in sub.stderr and "priority 3" in sub.stderr
        assert srv.records() == []  # recorded, nothing sent
        # The same command again is the same job, not a second one; --follow waits on it while a worker runs it.
        args = ["submit", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url, "--follow"]
        follower = sp.Popen(
            [sys.executable, "-m", "freight", *args], env=env, stdout=sp.PIPE, stderr=sp.PIPE, text=True
        )
        assert follower.stderr is not None
        said = [follower.stderr.readline()]
        assert said[0].startswith(f"queued again {job_id}"), said  # queued before any worker ran: it follows a run
        worker = freight(env, "worker", "--db", pg_url, "--exit-when-idle", "--poll-interval", "0.05")
        assert worker.returncode == 0, worker.stderr
        assert f"{job_id} completed" in worker.stderr
        followed, follow_err = follower.communicate(timeout=120)
        assert follower.returncode == 0, follow_err
        assert f"{job_id}: completed; succeeded 40" in follow_err
        assert followed.splitlines()[0] == job_id and "40 succeeded, 0 failed" in followed
        sent = Counter(r["custom_id"] for r in srv.records())
    assert len(sent) == 40 and max(sent.values()) == 1
    with Store(pg_url) as store:
        assert store.item_counts(job_id) == {"succeeded": 40}
        assert store.list_workers(include_dead=True) == []  # it retired on its way out
    results = cli(env, "results", job_id, "--db", pg_url)
    assert sorted(json.loads(x)["id"] for x in results.stdout.splitlines()) == sorted(f"doc-{i}" for i in range(40))


def _wait_for(what: str, check: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_workers_shows_the_pool_and_sigterm_releases_the_job_for_the_next_worker(tmp_path: Path, pg_url: str) -> None:
    held.install()
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 30)
    log = tmp_path / "worker.log"
    with LocalServer(tmp_path / "serve.db", engine=held.NAME, time_scale=0.0002) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        job_id = cli(env, "submit", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url).stdout.strip()
        first = start_worker(env, pg_url, "--concurrency", "2", log=log)
        try:
            # The engine holds every reply: the job's batch is submitted and cannot end while we look.
            assert held.arrived.wait(120), log.read_text()
            listed = cli(env, "workers", "--db", pg_url)
            assert listed.returncode == 0, listed.stderr
            line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("w-"))
            assert f"pid {first.pid}" in line and "1/2 slots" in line and job_id in line
            status = cli(env, "status", job_id, "--db", pg_url)
            assert f"held by worker {line.split()[0]}" in status.stdout, status.stdout
            first.send_signal(signal.SIGTERM)
            assert first.wait(120) == 0, log.read_text()
        finally:
            held.release.set()
            if first.poll() is None:
                first.kill()
        with Store(pg_url) as store:
            # Released, not completed: the step in hand was finished, and the rest left for the next worker.
            assert store.lease_holder(job_id) is None
            assert store.get_job(job_id).state is JobState.RUNNING  # type: ignore[union-attr]
            assert [b["state"] for b in store.batches(job_id)] != []
        nobody = cli(env, "workers", "--db", pg_url)
        assert "no live workers" in nobody.stdout
        second = freight(env, "worker", "--db", pg_url, "--exit-when-idle", "--poll-interval", "0.05")
        assert second.returncode == 0, second.stderr
        sent = Counter(r["custom_id"] for r in srv.records())
    assert len(sent) == 30 and max(sent.values()) == 1  # the second worker polled the batch, never sent it again
    with Store(pg_url) as store:
        assert store.item_counts(job_id) == {"succeeded": 30}


def test_the_open_batch_limit_holds_across_workers(tmp_path: Path, pg_url: str) -> None:
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        jobs = []
        for name in ("a", "b"):
            docs = write_docs(tmp_path / f"{name}.jsonl", name, 30)
            sub = cli(
                env, "submit", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url, "--batch-size", "10"
            )
            jobs.append(sub.stdout.strip())
        limit = ["--max-active-batches", "1", "--exit-when-idle"]
        pool = [start_worker(env, pg_url, *limit, log=tmp_path / "w.log") for _ in range(2)]
        assert [p.wait(180) for p in pool] == [0, 0], (tmp_path / "w.log").read_text()
    with Store(pg_url) as store:
        assert all(store.item_counts(j) == {"succeeded": 30} for j in jobs)
        # Two workers, two jobs, six batches: each was opened only once the one before it had ended.
        spans = sorted((b["created_at"], b["ended_at"]) for j in jobs for b in store.batches(j))
        assert len(spans) == 6
        assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
