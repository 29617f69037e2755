"""Issue 13, through the CLI against freight serve, on SQLite and PostgreSQL: what a user with a real key sees when
the key is revoked, a batch id is unknown, a batch file has a tool-using line, ids look like retry ids, and two runs
of one job start at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from freight.cli import app
from freight.domain import ExitCode, JobState
from freight.providers import get_provider
from freight.runner.job import RunOptions, open_job
from freight.runner.loop import Runner
from freight.server.testing import LocalServer
from freight.store import JobLease, Store
from freight.store.schema import batches

from .conftest import SCHEMA

cli = CliRunner()
MODEL = "claude-haiku-4-5"


def _docs(root: Path, texts: dict[str, str]) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for name, text in texts.items():
        (docs / f"{name}.txt").write_text(text)
    return docs


def _submitted_job(db_url: str, docs: Path, srv: LocalServer) -> str:
    """A job whose batch was submitted by a run that then stopped (the library, as a notebook would)."""
    opts = RunOptions(input=str(docs), provider="anthropic", model=MODEL, schema=SCHEMA, base_url=srv.base_url)
    with Store(db_url) as store:
        job, _ = open_job(store, opts)
        runner = Runner(store, get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key), job.job_id, opts)
        runner.create_first_requests()
        runner.submit_pending()
        assert [b["provider_batch_id"] is not None for b in store.batches(job.job_id)] == [True]
    return job.job_id


def test_revoked_key_on_resume_stops_the_job_naming_the_variable(tmp_path: Path, db_url: str) -> None:
    docs = _docs(tmp_path, {f"d{i}": f"Vendor: Acme\nTotal: {i}" for i in range(3)})
    with LocalServer(tmp_path / "serve.db", api_key="the-old-key", time_scale=0.0002) as srv:
        job_id = _submitted_job(db_url, docs, srv)
        result = cli.invoke(app, ["resume", job_id, "--db", db_url], env={"ANTHROPIC_API_KEY": "a-revoked-key"})
    assert result.exit_code == ExitCode.STOPPED, result.output
    assert "ANTHROPIC_API_KEY" in result.output and srv.base_url in result.output
    assert f"freight resume {job_id}" in result.output
    assert "Traceback" not in result.output and "a-revoked-key" not in result.output
    with Store(db_url) as store:
        job = store.get_job(job_id)
        assert job is not None and job.state is JobState.STOPPED
        (stopped,) = store.events(job_id, kind="job.stopped")
        assert "ANTHROPIC_API_KEY" in stopped["data"]["message"]
        assert store.lease_holder(job_id) is None  # released on the way out


def test_unknown_batch_id_stops_the_job_saying_what_to_check(tmp_path: Path, db_url: str) -> None:
    docs = _docs(tmp_path, {f"d{i}": f"Vendor: Acme\nTotal: {i}" for i in range(3)})
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        job_id = _submitted_job(db_url, docs, srv)
        with Store(db_url) as store, store.engine.begin() as conn:  # as if recorded from another account
            conn.execute(batches.update().values(provider_batch_id="msgbatch_of_another_account"))
        result = cli.invoke(app, ["resume", job_id, "--db", db_url], env={"ANTHROPIC_API_KEY": srv.api_key})
    assert result.exit_code == ExitCode.STOPPED, result.output
    assert "msgbatch_of_another_account" in result.output and "does not know it" in result.output
    assert "ANTHROPIC_API_KEY" in result.output and "Traceback" not in result.output
    with Store(db_url) as store:
        job = store.get_job(job_id)
        assert job is not None and job.state is JobState.STOPPED


def test_a_tool_using_line_in_a_batch_file_goes_sync_and_the_rest_in_a_batch(tmp_path: Path, db_url: str) -> None:
    def line(cid: str, **extra: object) -> str:
        params = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": f"hello {cid}"}]}
        return json.dumps({"custom_id": cid, "params": {**params, **extra}})

    tools = [{"name": "read_file", "input_schema": {"type": "object"}}]
    reqs = tmp_path / "requests.jsonl"
    reqs.write_text("\n".join([line("a1"), line("t1", tools=tools), line("a2")]) + "\n")
    out = tmp_path / "out"
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        result = cli.invoke(
            app,
            ["run", str(reqs), "--mode", "batch", "--base-url", srv.base_url, "--db", db_url, "--out", str(out),
             "--poll-interval", "0.05", "--model", MODEL],
            env={"ANTHROPIC_API_KEY": srv.api_key},
        )  # fmt: skip
        records = srv.records()
    assert result.exit_code == 0, result.output
    assert "request t1 goes through the synchronous API" in result.output and "tools" in result.output
    # The server's own records: one synchronous call (a sync call carries no custom_id), the other two in one batch.
    assert len([r for r in records if r["batch_id"] is None]) == 1
    in_batches = [r for r in records if r["batch_id"] is not None]
    assert sorted(r["custom_id"] for r in in_batches) == ["a1", "a2"]
    assert len({r["batch_id"] for r in in_batches}) == 1
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == ["a1", "a2", "t1"]


def test_document_ids_that_look_like_retry_ids(tmp_path: Path, db_url: str) -> None:
    # `inv`'s reply is bad JSON once, so it is re-asked: its retry must not take `inv-r1`'s id.
    docs = _docs(
        tmp_path,
        {
            "inv": "Vendor: Acme [[fault:malformed_json#inv]]\nTotal: 1",
            "inv-r1": "Vendor: Globex\nTotal: 2",
            "inv--r1": "Vendor: Initech\nTotal: 3",
        },
    )
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    out = tmp_path / "out"
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        result = cli.invoke(
            app,
            ["run", str(docs), "--schema", str(tmp_path / "schema.json"), "--base-url", srv.base_url, "--db", db_url,
             "--out", str(out), "--poll-interval", "0.05", "--model", MODEL],
            env={"ANTHROPIC_API_KEY": srv.api_key},
        )  # fmt: skip
        records = srv.records()
    assert result.exit_code == 0, result.output
    ids = [r["custom_id"] for r in records]
    assert len(ids) == len(set(ids)) == 4  # three documents and one re-ask, each id received once
    assert "inv-r1" in ids and "inv--r1" in ids
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == ["inv", "inv--r1", "inv-r1"]
    assert all(x["status"] == "succeeded" for x in lines), lines


def _two_runs(tmp_path: Path, db_url: str, *extra: str) -> tuple[list[subprocess.CompletedProcess[str]], list[str]]:
    docs = _docs(tmp_path, {f"doc{i:03d}": f"Vendor: V{i}\nTotal: {i}" for i in range(300)})
    # Slow enough (about 3 s for the batch) that the two runs overlap.
    with LocalServer(tmp_path / "serve.db", time_scale=0.02, subprocess=True) as srv:
        args = [
            sys.executable, "-m", "freight", "run", str(docs), "--base-url", srv.base_url, "--db", db_url,
            "--model", MODEL, "--no-sample", "--poll-interval", "0.2", "--out", str(tmp_path / "out"), *extra,
        ]  # fmt: skip
        env = {**os.environ, "ANTHROPIC_API_KEY": srv.api_key, "FREIGHT_HOME": str(tmp_path / "home")}
        procs = [
            subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
        ]
        done = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            done.append(subprocess.CompletedProcess(args, p.returncode, stdout, stderr))
        records = srv.records()
    ids = [r["custom_id"] for r in records]
    assert len(ids) == len(set(ids)) == 300, "a custom_id was received twice (billed twice)"
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == [f"doc{i:03d}" for i in range(300)]
    for p in done:
        assert "Traceback" not in p.stderr, p.stderr
    return done, ids


def test_two_runs_started_at_once_the_loser_exits_held(tmp_path: Path, db_url: str) -> None:
    done, _ = _two_runs(tmp_path, db_url)
    codes = sorted(p.returncode for p in done)
    assert codes in ([0, 0], [0, ExitCode.HELD]), [p.stderr for p in done]
    for p in done:
        if p.returncode == ExitCode.HELD:
            assert "is being run by pid" in p.stderr and "--wait" in p.stderr
    with Store(db_url) as store:
        (job,) = store.list_jobs()
        assert job.state is JobState.COMPLETED and store.lease_holder(job.job_id) is None


def test_two_runs_started_at_once_with_wait_both_succeed(tmp_path: Path, db_url: str) -> None:
    done, _ = _two_runs(tmp_path, db_url, "--wait")
    assert [p.returncode for p in done] == [0, 0], [p.stderr for p in done]
    with Store(db_url) as store, store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(batches)).scalar_one() == 1


def test_resume_and_cancel_of_a_held_job_exit_held_naming_the_holder(tmp_path: Path, db_url: str) -> None:
    docs = _docs(tmp_path, {"d0": "Vendor: Acme\nTotal: 1"})
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        job_id = _submitted_job(db_url, docs, srv)
        env = {"ANTHROPIC_API_KEY": srv.api_key}
        with Store(db_url) as store, JobLease(store, job_id):  # another runner, alive, holds the job
            for command in (["resume", job_id], ["cancel", job_id]):
                result = cli.invoke(app, [*command, "--db", db_url], env=env)
                assert result.exit_code == ExitCode.HELD, result.output
                assert f"is being run by pid {os.getpid()}" in result.output and "--wait" in result.output
                assert "Traceback" not in result.output
        # Released: the same resume now runs to the end.
        result = cli.invoke(app, ["resume", job_id, "--db", db_url, "--poll-interval", "0.05"], env=env)
        assert result.exit_code == 0, result.output


def test_cancel_with_a_revoked_key_stops_instead_of_hanging(tmp_path: Path, db_url: str) -> None:
    docs = _docs(tmp_path, {"d0": "Vendor: Acme\nTotal: 1"})
    # A slow clock: the batch is still open when the cancel comes.
    with LocalServer(tmp_path / "serve.db", time_scale=1.0) as srv:
        job_id = _submitted_job(db_url, docs, srv)
        result = cli.invoke(app, ["cancel", job_id, "--db", db_url], env={"ANTHROPIC_API_KEY": "revoked"})
    assert result.exit_code == ExitCode.STOPPED, result.output
    assert "canceling batch" in result.output and "ANTHROPIC_API_KEY" in result.output
    with Store(db_url) as store:
        job = store.get_job(job_id)
        assert job is not None and job.state is JobState.STOPPED


def test_cancel_with_wait_asks_the_running_runner_to_stop_then_cancels(tmp_path: Path, db_url: str) -> None:
    import time

    docs = _docs(tmp_path, {f"d{i:02d}": f"Vendor: V{i}\nTotal: {i}" for i in range(50)})
    with LocalServer(tmp_path / "serve.db", time_scale=0.05, subprocess=True) as srv:
        env = {**os.environ, "ANTHROPIC_API_KEY": srv.api_key, "FREIGHT_HOME": str(tmp_path / "home")}
        args = [sys.executable, "-m", "freight", "run", str(docs), "--base-url", srv.base_url, "--db", db_url,
                "--model", MODEL, "--no-sample", "--poll-interval", "0.2", "--out", str(tmp_path / "out")]  # fmt: skip
        runner = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            job_id = None
            deadline = time.monotonic() + 120
            while job_id is None:  # wait until the runner holds the job and has submitted its batch
                assert time.monotonic() < deadline and runner.poll() is None, "the runner never submitted"
                with Store(db_url) as store:
                    for job in store.list_jobs():
                        if store.lease_holder(job.job_id) and store.batches(job.job_id):
                            job_id = job.job_id
                time.sleep(0.05)
            result = cli.invoke(
                app, ["cancel", job_id, "--db", db_url, "--wait"], env={"ANTHROPIC_API_KEY": srv.api_key}
            )
            _, stderr = runner.communicate(timeout=300)
        finally:
            if runner.poll() is None:
                runner.kill()
    assert result.exit_code == 0, result.output
    assert "waiting for pid" in result.output
    assert runner.returncode == 0 and "Traceback" not in stderr, stderr
    assert "the job is being canceled" in stderr
    with Store(db_url) as store:
        job = store.get_job(job_id)
        assert job is not None and job.state is JobState.CANCELED and store.lease_holder(job_id) is None
