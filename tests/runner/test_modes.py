"""Sync mode, auto routing, ready-made request files, cancel, and the commands that read a job."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from freight.cli import app
from freight.domain import JobState
from freight.providers import get_provider
from freight.runner.job import RunOptions, open_job
from freight.runner.loop import Runner
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import SCHEMA

cli = CliRunner()


def _docs(root: Path, n: int, text: str = "Vendor: Acme\nTotal: {i}") -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(n):
        (docs / f"d{i:02d}.txt").write_text(text.format(i=i))
    return docs


def test_sync_mode_sends_each_request_synchronously(tmp_path: Path, server: LocalServer) -> None:
    docs = _docs(tmp_path, 5)
    (docs / "d02.txt").write_text("Vendor: Acme [[fault:overloaded#sync]]")
    opts = RunOptions(
        input=str(docs),
        provider="openai",
        model="gpt-4o-mini",
        schema=SCHEMA,
        mode="sync",
        base_url=server.openai_base_url,
    )
    with Store(str(tmp_path / "f.db")) as store:
        job, _ = open_job(store, opts)
        Runner(
            store,
            get_provider("openai", base_url=server.openai_base_url, api_key=server.api_key),
            job.job_id,
            opts,
            sleep=lambda s: None,
        ).run()
        assert store.item_counts(job.job_id) == {"succeeded": 5}
        assert store.batches(job.job_id) == []
    records = server.records()
    assert records and all(r["batch_id"] is None for r in records)  # nothing went through a batch
    # One call per document, plus the planted overload's first attempt, which the adapter retried by itself.
    assert len(records) == 6


def test_auto_mode_routes_tool_requests_to_sync_and_says_why(tmp_path: Path, server: LocalServer) -> None:
    line = {
        "custom_id": "t1",
        "params": {
            "model": "claude-haiku-4-5",
            "max_tokens": 50,
            "tools": [{"name": "read_file", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "review this"}],
        },
    }
    reqs = tmp_path / "requests.jsonl"
    reqs.write_text(json.dumps(line) + "\n")
    result = cli.invoke(
        app,
        [
            "run",
            str(reqs),
            "--mode",
            "auto",
            "--base-url",
            server.base_url,
            "--db",
            str(tmp_path / "f.db"),
            "--poll-interval",
            "0.05",
            "--out",
            str(tmp_path / "o"),
        ],
        env={"ANTHROPIC_API_KEY": server.api_key},
    )
    assert result.exit_code == 0, result.output
    assert "route: sync" in result.output and "tool" in result.output
    assert all(r["batch_id"] is None for r in server.records())


def test_a_ready_made_batch_file_runs_as_is(tmp_path: Path, server: LocalServer) -> None:
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
        for i in range(4)
    ]
    reqs = tmp_path / "batch.jsonl"
    reqs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = cli.invoke(
        app,
        [
            "run",
            str(reqs),
            "--provider",
            "openai",
            "--base-url",
            server.openai_base_url,
            "--db",
            str(tmp_path / "f.db"),
            "--poll-interval",
            "0.05",
            "--out",
            str(tmp_path / "o"),
            "--json",
        ],
        env={"OPENAI_API_KEY": server.api_key},
    )
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert {x["id"]: x["output"] for x in out} == {f"req-{i}": f"echo: hi {i}" for i in range(4)}
    assert sorted(r["custom_id"] for r in server.records() if r["batch_id"]) == [f"req-{i}" for i in range(4)]


def test_cancel_ends_open_batches_and_documents_canceled(tmp_path: Path) -> None:
    import threading

    import anthropic

    from . import held_engine

    held_engine.install()
    # The engine holds its replies until the server shows the batch canceling: the batch cannot end first, however
    # slow the machine. 40 documents and room for 32 in flight: the 8 never started end canceled.
    with LocalServer(tmp_path / "slow.db", engine=held_engine.NAME, time_scale=0.001) as srv:
        claude = anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key)

        def release_once_canceling() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not held_engine.release.is_set():
                if any(b.processing_status == "canceling" for b in claude.messages.batches.list()):
                    break
                time.sleep(0.05)
            held_engine.release.set()

        docs = _docs(tmp_path, 40)
        opts = RunOptions(input=str(docs), provider="anthropic", model="claude-haiku-4-5", base_url=srv.base_url)
        db = str(tmp_path / "f.db")
        watcher = threading.Thread(target=release_once_canceling, daemon=True)
        try:
            with Store(db) as store:
                job, _ = open_job(store, opts)
                adapter = get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key)
                runner = Runner(store, adapter, job.job_id, opts, poll_interval=0.05)
                runner.store.set_job_state(job.job_id, JobState.RUNNING)
                runner.create_first_requests()
                runner.submit_pending()
                assert store.batches(job.job_id)[0]["state"] in ("submitted", "in_progress")
            assert held_engine.arrived.wait(120), "the batch never reached the server's engine"
            watcher.start()
            result = cli.invoke(app, ["cancel", job.job_id, "--db", db], env={"ANTHROPIC_API_KEY": srv.api_key})
        finally:
            held_engine.release.set()
        assert result.exit_code == 0, result.output
        with Store(db) as store:
            assert store.get_job(job.job_id).state is JobState.CANCELED  # type: ignore[union-attr]
            counts = store.item_counts(job.job_id)
            assert counts == {"canceled": 8, "succeeded": 32}, counts
            assert store.batches(job.job_id)[0]["state"] == "canceled"


def test_status_results_and_jobs_read_the_store(tmp_path: Path, server: LocalServer) -> None:
    docs = _docs(tmp_path, 3)
    db = str(tmp_path / "f.db")
    env = {"ANTHROPIC_API_KEY": server.api_key}
    run = cli.invoke(
        app,
        [
            "run",
            str(docs),
            "--model",
            "claude-haiku-4-5",
            "--base-url",
            server.base_url,
            "--db",
            db,
            "--poll-interval",
            "0.05",
            "--out",
            str(tmp_path / "o"),
        ],
        env=env,
    )
    assert run.exit_code == 0, run.output
    assert "3 documents, 3 succeeded, 0 failed" in run.output and "saved $" in run.output
    jobs = json.loads(cli.invoke(app, ["jobs", "--db", db, "--json"]).output)
    (job,) = jobs
    assert job["state"] == "completed" and job["items"] == {"succeeded": 3}
    status = json.loads(cli.invoke(app, ["status", job["job_id"], "--db", db, "--json"]).output)
    assert status["items"] == {"succeeded": 3} and status["batches"][0]["state"] == "ended"
    assert status["totals"]["cost_usd"] > 0 and status["totals"]["sync_cost_usd"] == 2 * status["totals"]["cost_usd"]
    lines = cli.invoke(app, ["results", job["job_id"], "--db", db]).output.splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["d00", "d01", "d02"]
    missing = cli.invoke(app, ["status", "job_nope", "--db", db])
    assert missing.exit_code == 1 and "no job 'job_nope'" in missing.output
    resumed = cli.invoke(app, ["resume", job["job_id"], "--db", db])
    assert resumed.exit_code == 1 and "nothing to resume" in resumed.output


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    result = cli.invoke(
        app,
        [
            "run",
            str(bad),
            "--model",
            "claude-haiku-4-5",
            "--base-url",
            "http://127.0.0.1:9",
            "--db",
            str(tmp_path / "f.db"),
        ],
        env={"ANTHROPIC_API_KEY": "k"},
    )
    assert result.exit_code == 2  # a usage mistake, found before anything was sent
    assert f"{bad}:2: document id 'a' already appears on line 1" in result.output
    assert "Traceback" not in result.output


def test_the_embedded_server_runs_a_job_and_dies_with_its_runner(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    docs = _docs(tmp_path, 4)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FREIGHT_HOME"] = str(tmp_path / "home")
    base = [
        sys.executable,
        "-m",
        "freight",
        "run",
        str(docs),
        "--engine",
        "scripted",
        "--db",
        str(tmp_path / "f.db"),
        "--poll-interval",
        "0.1",
        "--out",
        str(tmp_path / "o"),
    ]
    done = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "4 documents, 4 succeeded" in done.stdout
    # Killed outright, the runner takes its embedded server with it.
    (tmp_path / "more").mkdir()
    proc = subprocess.Popen(
        [*base[:4], str(_docs(tmp_path / "more", 3)), *base[5:]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    children: list[str] = []
    deadline = time.monotonic() + 60
    while not children and time.monotonic() < deadline:  # until the runner has started its server
        time.sleep(0.2)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    def alive() -> list[str]:
        found = []
        for pid in children:
            try:
                if "zombie" not in Path(f"/proc/{pid}/status").read_text().lower():
                    found.append(pid)
            except FileNotFoundError:
                pass
        return found

    # The server gets SIGTERM when its parent dies and shuts down; how long that takes depends on the machine's load,
    # so wait for it to be gone (bounded) rather than for a fixed time.
    deadline = time.monotonic() + 60
    while children and alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children and not alive()


def test_auto_mode_a_deadline_inside_the_batch_window_runs_sync(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from freight.plan.model import Mode
    from freight.runner.job import decide_mode

    docs = _docs(tmp_path, 150)
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    opts = RunOptions(input=str(docs), provider="anthropic", model="claude-haiku-4-5")
    roomy = decide_mode(opts, now)
    assert roomy.mode is Mode.BATCH  # 150 documents, nobody waiting, no deadline
    opts.deadline = (now + timedelta(hours=3)).isoformat()
    tight = decide_mode(opts, now)
    assert tight.mode is Mode.SYNC
    assert any("window" in r.text for r in tight.reasons), [r.text for r in tight.reasons]
    opts.deadline = "tomorrow morning"
    bad = cli.invoke(
        app,
        [
            "run",
            str(docs),
            "--mode",
            "auto",
            "--deadline",
            "tomorrow morning",
            "--model",
            "claude-haiku-4-5",
            "--base-url",
            "http://127.0.0.1:9",
            "--db",
            str(tmp_path / "f.db"),
        ],
        env={"ANTHROPIC_API_KEY": "k"},
    )
    assert bad.exit_code == 2 and "--deadline 'tomorrow morning' is not an ISO 8601 time" in bad.output


def test_ctrl_c_detaches_and_says_how_to_resume(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from . import held_engine

    docs = _docs(tmp_path, 3)
    db = str(tmp_path / "f.db")
    held_engine.install()
    # The server's engine holds every reply until the test releases it: the batch cannot end, so the job is surely
    # still running when Ctrl-C arrives, however slow the machine (no race against the server's clock).
    with LocalServer(tmp_path / "slow.db", engine=held_engine.NAME, time_scale=0.001) as srv:
        try:
            env = {**os.environ, "ANTHROPIC_API_KEY": srv.api_key}
            cmd = [
                sys.executable, "-m", "freight", "run", str(docs), "--model", "claude-haiku-4-5",
                "--base-url", srv.base_url, "--db", db, "--poll-interval", "0.1", "--out", str(tmp_path / "o"),
            ]  # fmt: skip
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # Observable: the submitted batch is being worked on at the server (and held there).
            assert held_engine.arrived.wait(120), "the runner's batch never reached the server's engine"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            held_engine.release.set()
        assert proc.returncode == 130, err
        assert "detached from job_" in err and "Resume with: freight resume job_" in err
        assert "Traceback" not in err
        job_id = err.split("freight resume ")[1].split()[0]
        resumed = subprocess.run(
            [sys.executable, "-m", "freight", "resume", job_id, "--db", db, "--poll-interval", "0.1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert "3 documents, 3 succeeded" in resumed.stdout
        assert len([r for r in srv.records() if r["batch_id"]]) == 3  # the batch was polled, not sent again
