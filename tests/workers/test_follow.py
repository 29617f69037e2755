"""`freight run --follow`: on PostgreSQL with a live worker the run is handed to it and followed (the same report and
exit code as a run in the foreground); anywhere else it runs in the foreground and says why; Ctrl-C detaches."""

from __future__ import annotations

import signal
import subprocess as sp
import sys
from collections import Counter
from pathlib import Path

import pytest

from freight.domain import JobState
from freight.server.testing import LocalServer
from freight.store import Store

from . import held
from .conftest import cli, env_for, start_worker, write_docs
from .test_worker_cli import _wait_for

PROMPT = ["--prompt-text", "Extract.\n{document}", "-m", "scripted", "--allow-unpriced", "--no-sample"]


def _registered(pg_url: str, worker: sp.Popen[str]) -> bool:
    with Store(pg_url) as store:
        return worker.pid in {w.pid for w in store.list_workers()}


def _stop(worker: sp.Popen[str]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except sp.TimeoutExpired:
            worker.kill()
            worker.wait(30)


def test_run_follow_hands_the_job_to_a_live_worker_and_ends_as_a_run_does(tmp_path: Path, pg_url: str) -> None:
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 40)
    log = tmp_path / "worker.log"
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        worker = start_worker(env, pg_url, log=log)
        try:
            _wait_for("the worker to register", lambda: _registered(pg_url, worker))
            run = cli(env, "run", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url, "--follow")
        finally:
            _stop(worker)
        sent = Counter(r["custom_id"] for r in srv.records())
    assert run.returncode == 0, run.stderr + log.read_text()
    assert "following" in run.stderr and "on the workers" in run.stderr
    assert "40 succeeded, 0 failed" in run.stdout and "outputs:" in run.stdout
    with Store(pg_url) as store:
        (job,) = store.list_jobs()
        assert store.item_counts(job.job_id) == {"succeeded": 40}
        # The loop ran in the worker, not in the process that followed: every lease taken on the job after it was
        # queued was the worker's (a claim owner is `<worker id>/<slot>`).
        owners = {e["data"]["pid"] for e in store.events(job.job_id, kind="lease.acquired")}
    assert worker.pid in owners
    assert f"claimed {job.job_id}" in log.read_text() and f"{job.job_id} completed" in log.read_text()
    assert len(sent) == 40 and max(sent.values()) == 1
    assert (tmp_path / "freight-out" / job.job_id / "results.jsonl").read_text().count("\n") == 40


@pytest.mark.parametrize("where", ["sqlite", "postgres without workers"])
def test_run_follow_runs_in_the_foreground_where_no_worker_can_and_says_why(
    tmp_path: Path, pg_url: str, where: str
) -> None:
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 12)
    db = str(tmp_path / "f.db") if where == "sqlite" else pg_url
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        run = cli(env, "run", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", db, "--follow")
    assert run.returncode == 0, run.stderr
    why = "a SQLite store has no workers (" if where == "sqlite" else "no live worker on this store ("
    assert f"--follow: {why}" in run.stderr and "; running the job here in the foreground" in run.stderr
    assert "12 succeeded, 0 failed" in run.stdout


def test_ctrl_c_while_following_detaches_and_the_same_command_follows_again(tmp_path: Path, pg_url: str) -> None:
    held.install()
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 20)
    log = tmp_path / "worker.log"
    with LocalServer(tmp_path / "serve.db", engine=held.NAME, time_scale=0.0002) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        args = ["run", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url, "--follow"]
        worker = start_worker(env, pg_url, log=log)
        try:
            _wait_for("the worker to register", lambda: _registered(pg_url, worker))
            follower = sp.Popen(
                [sys.executable, "-m", "freight", *args], env=env, stdout=sp.PIPE, stderr=sp.PIPE, text=True
            )
            # The engine holds every reply: the batch is at the server and cannot end while we interrupt.
            assert held.arrived.wait(120), log.read_text()
            follower.send_signal(signal.SIGINT)
            out, err = follower.communicate(timeout=60)
            assert follower.returncode == 130, err
            assert "keeps running on the workers" in err and "the same command" in err
            assert "Traceback" not in err
            with Store(pg_url) as store:
                (job,) = store.list_jobs()
                assert store.get_job(job.job_id).state is JobState.RUNNING  # type: ignore[union-attr]
                assert store.job_holder(job.job_id)["worker"] is not None  # type: ignore[index]
            held.release.set()
            again = cli(env, *args)
        finally:
            held.release.set()
            _stop(worker)
        sent = Counter(r["custom_id"] for r in srv.records())
    assert again.returncode == 0, again.stderr + log.read_text()
    assert "20 succeeded, 0 failed" in again.stdout
    assert len(sent) == 20 and max(sent.values()) == 1  # followed again, never sent again


def test_a_job_a_worker_stops_ends_the_follow_with_the_workers_reason_and_exit_4(tmp_path: Path, pg_url: str) -> None:
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 10)
    log = tmp_path / "worker.log"
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        # The worker's key is refused (a revoked key on the worker's machine): the job cannot heal and stops there.
        worker = start_worker(env_for("sk-revoked", tmp_path / "worker-home"), pg_url, log=log)
        env = env_for(srv.api_key, tmp_path / "home")
        try:
            _wait_for("the worker to register", lambda: _registered(pg_url, worker))
            run = cli(env, "run", str(docs), *PROMPT, "--base-url", srv.base_url, "--db", pg_url, "--follow")
        finally:
            _stop(worker)
    assert run.returncode == 4, run.stderr + log.read_text()
    assert "the job is saved: fix the cause and run `freight resume" in run.stderr
    with Store(pg_url) as store:
        (job,) = store.list_jobs()
        stopped = store.events(job.job_id, kind="job.stopped")
    assert job.state is JobState.STOPPED and stopped[-1]["data"]["message"] in run.stderr
    assert "Traceback" not in run.stderr


def test_run_follow_of_a_job_already_queued_follows_it_and_takes_nothing(tmp_path: Path, pg_url: str) -> None:
    docs = write_docs(tmp_path / "docs.jsonl", "doc", 30)
    log = tmp_path / "worker.log"
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        env = env_for(srv.api_key, tmp_path / "home")
        args = [str(docs), *PROMPT[:-1], "--base-url", srv.base_url, "--db", pg_url]  # submit never samples
        sub = cli(env, "submit", *args)
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.strip()
        worker = start_worker(env, pg_url, log=log)
        try:
            _wait_for("the worker to register", lambda: _registered(pg_url, worker))
            run = cli(env, "run", *args, "--no-sample", "--follow")  # the same input and options: the same job
        finally:
            _stop(worker)
    assert run.returncode == 0, run.stderr + log.read_text()
    assert f"following {job_id}" in run.stderr and "30 succeeded, 0 failed" in run.stdout
    with Store(pg_url) as store:
        takers = {e["data"]["pid"] for e in store.events(job_id, kind="lease.acquired")}
    assert takers == {worker.pid}  # this process never held the job, not even for a moment
