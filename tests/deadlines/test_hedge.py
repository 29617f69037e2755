"""Hedging a job with a deadline, against `freight serve` replaying a bad night, through the official SDK.

The runner's wall clock is injected: it reads the real time until the server's own database shows the state the test
is about (a batch stalled with part of its work done, a batch stuck in finalizing), then jumps forward to just past
the hedge point. So the hedge happens exactly when that state holds, however loaded the machine is, and "before the
deadline" is judged on the same clock with a margin of tens of seconds for what the hedge itself does.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import pytest
import sqlalchemy as sa

import freight
from freight.domain import JobState
from freight.server.testing import LocalServer
from freight.store import Store

SCHEMA = {"type": "object", "properties": {"vendor": {"type": "string"}}, "required": ["vendor"]}
N = 10
DEADLINE_IN = 3600.0  # seconds from the start of the run, on the injected clock
MARGIN = 30.0
SYNC_SECONDS = 1.0  # per request, for the hedge's estimate: 10 documents, 4 at a time -> 3 s


def write_docs(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(N):
        (docs / f"inv-{i}.txt").write_text(f"vendor: Vendor {i}\ntotal: {i}")
    return docs


def server_batches(srv: LocalServer) -> list[dict[str, Any]]:
    engine = sa.create_engine(f"sqlite:///{srv.db}")
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text("SELECT state, n_succeeded, total FROM batches")).mappings()]
    finally:
        engine.dispose()


class JumpingClock:
    """Real time, plus a jump to just past the hedge point once `ready()` holds (checked at most every 50 ms)."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.start = time.time()
        self.deadline = self.start + DEADLINE_IN
        self.ready = ready
        self.offset = 0.0
        self._checked = 0.0

    def __call__(self) -> float:
        now = time.time()
        if self.offset == 0.0 and now - self._checked > 0.05:
            self._checked = now
            if self.ready():
                # the hedge point for all N documents is deadline - 3 s - MARGIN: land one second past it
                self.offset = (self.deadline - 3 * SYNC_SECONDS - MARGIN + 1) - now
        return now + self.offset


@pytest.fixture
def stalled(tmp_path: Path) -> Iterator[LocalServer]:
    # Every batch stops after 20-80 % of its requests and would sit until the 24 h window's end (43 s here).
    with LocalServer(tmp_path / "serve.db", time_scale=0.0005, faults="stall=1,seed=5") as srv:
        yield srv


@pytest.fixture
def stuck_finalizing(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "serve.db", time_scale=0.0005, faults="stall_finalizing=1") as srv:
        yield srv


def run_hedged(tmp_path: Path, srv: LocalServer, clock: JumpingClock, **extra: Any) -> freight.Report:
    deadline = datetime.fromtimestamp(clock.deadline, UTC).isoformat()
    opts = freight.prepare(
        write_docs(tmp_path),
        prompt="Extract the vendor.\n\n{document}",
        schema=SCHEMA,
        provider="anthropic",
        model="claude-haiku-4-5",
        base_url=srv.base_url,
        api_key=srv.api_key,
        deadline=deadline,
        hedge_margin=MARGIN,
        sync_seconds=SYNC_SECONDS,
        out=tmp_path / "out",
        **extra,
    )
    with Store(str(tmp_path / "freight.db")) as store:
        job = freight.Job.open(opts, store=store, api_key=srv.api_key)
        return job.run(poll_interval=0.05, wall_clock=clock)


def batch_results(srv: LocalServer) -> dict[str, str]:
    client = anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key)
    (batch,) = list(client.messages.batches.list())
    return {r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)}


def test_a_stalled_batch_is_hedged_finished_results_kept_and_only_the_rest_sent_synchronously(
    tmp_path: Path, stalled: LocalServer
) -> None:
    clock = JumpingClock(lambda: any(b["n_succeeded"] > 0 for b in server_batches(stalled)))
    report = run_hedged(tmp_path, stalled, clock, max_retries=0)  # the hedge spends none of a document's retries
    finished_at = clock()

    assert report.state == "completed" and report.succeeded == N and report.failed == 0
    assert finished_at < clock.deadline  # the deadline is kept

    # The server's side: which custom_id went where. Its batch answered some and returned the rest canceled ...
    in_batch = batch_results(stalled)
    assert len(in_batch) == N
    kept = {cid for cid, kind in in_batch.items() if kind == "succeeded"}
    canceled = {cid for cid, kind in in_batch.items() if kind == "canceled"}
    assert kept and canceled and kept | canceled == set(in_batch)
    # ... and exactly as many synchronous calls reached it as the batch left unanswered: none went both ways.
    records = stalled.records()
    assert Counter(r["batch_id"] is None for r in records)[True] == len(canceled)
    assert Counter(r["custom_id"] for r in records if r["batch_id"]) == Counter(set(in_batch))  # each once, in batch

    # The runner's side agrees document by document, and says why.
    hedge = report.data["hedge"]
    ways = {doc: d["way"] for doc, d in hedge["documents"].items()}
    assert {doc for doc, way in ways.items() if way == "batch"} == kept
    assert {doc for doc, way in ways.items() if way == "sync"} == canceled
    assert all("canceled from the hedge's cancel" in hedge["documents"][d]["why"] for d in canceled)
    lines = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {x["id"]: x["custom_ids"] for x in lines if x["id"] in canceled} == {d: [d, f"{d}--r1"] for d in canceled}
    # The discount was kept on what the batch finished, in proportion.
    assert hedge["documents_batch"] == len(kept) and hedge["documents_sync"] == len(canceled)
    assert report.data["retries_by_fix"] == {"hedge": len(canceled)}
    assert hedge["discount_kept"] == pytest.approx(len(kept) / N, abs=0.1)
    assert f"{len(kept)} of {N} documents answered in batch, {len(canceled)} synchronously" in report.render()
    assert "hedged at" in report.render() and "1 batch(es) canceled" in report.render() and "margin" in hedge["reason"]


def test_a_batch_stuck_in_finalizing_is_canceled_and_every_result_it_finished_is_kept(
    tmp_path: Path, stuck_finalizing: LocalServer
) -> None:
    clock = JumpingClock(lambda: any(b["state"] == "finalizing" for b in server_batches(stuck_finalizing)))
    report = run_hedged(tmp_path, stuck_finalizing, clock)
    assert clock() < clock.deadline
    assert report.state == "completed" and report.succeeded == N
    assert set(batch_results(stuck_finalizing).values()) == {"succeeded"}
    assert not [r for r in stuck_finalizing.records() if r["batch_id"] is None]  # nothing needed the sync API
    hedge = report.data["hedge"]
    assert hedge["documents_batch"] == N and hedge["discount_kept"] == 1.0


def test_without_a_late_batch_there_is_no_hedge(tmp_path: Path) -> None:
    with LocalServer(tmp_path / "serve.db", time_scale=0.0005) as srv:
        clock = JumpingClock(lambda: False)
        report = run_hedged(tmp_path, srv, clock)
        assert report.succeeded == N and "hedge" not in report.data
        assert not [r for r in srv.records() if r["batch_id"] is None]


def test_hedge_duplicate_sends_synchronously_without_canceling(tmp_path: Path, stalled: LocalServer) -> None:
    clock = JumpingClock(lambda: any(b["n_succeeded"] > 0 for b in server_batches(stalled)))
    report = run_hedged(tmp_path, stalled, clock, hedge_duplicate=True)
    assert report.state == "completed" and report.succeeded == N
    (batch,) = server_batches(stalled)
    assert batch["state"] != "canceled"  # left running: the duplicates are paid on top
    unanswered = batch["total"] - batch["n_succeeded"]
    assert len([r for r in stalled.records() if r["batch_id"] is None]) >= unanswered
    assert report.data["hedge"]["documents_sync"] >= unanswered


def test_a_deadline_that_is_not_a_time_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(freight.UsageError, match=r"--deadline 'tomorrow' is not an ISO 8601 time"):
        freight.prepare(write_docs(tmp_path), provider="anthropic", model="claude-haiku-4-5",
                        base_url="http://127.0.0.1:9", api_key="k", deadline="tomorrow")  # fmt: skip


# --- through the CLI ------------------------------------------------------------------------------------------------


def test_cli_a_deadline_too_close_for_any_batch_goes_synchronously_at_once_saying_why(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from freight.cli import app

    docs = write_docs(tmp_path)
    soon = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
    with LocalServer(tmp_path / "serve.db", time_scale=0.0005) as srv:
        args = ["run", str(docs), "--prompt-text", "Extract the vendor.\n\n{document}", "--model", "claude-haiku-4-5",
                "--base-url", srv.base_url, "--db", str(tmp_path / "f.db"), "--no-sample", "--poll-interval", "0.05",
                "--deadline", soon, "--hedge-margin", "7200", "--out", str(tmp_path / "out")]  # fmt: skip
        result = CliRunner().invoke(app, args, env={"ANTHROPIC_API_KEY": srv.api_key})
        records = srv.records()
    assert result.exit_code == 0, result.output
    assert "hedging: 10 document(s) unfinished" in result.output and "7200 s margin" in result.output
    assert f"0 of {N} documents answered in batch, {N} synchronously; 0% of the batch discount kept" in result.output
    assert [r["batch_id"] for r in records] == [None] * N  # nothing was put in a batch, each sent once
    bad = CliRunner().invoke(app, [*args[:-6], "--deadline", "next friday"], env={"ANTHROPIC_API_KEY": "k"})
    assert bad.exit_code == 2 and "--deadline 'next friday' is not an ISO 8601 time" in bad.output
    assert "Traceback" not in bad.output


def test_a_run_that_stops_right_after_hedging_is_resumed_hedged(tmp_path: Path, stalled: LocalServer) -> None:
    """The hedge is in the store, not in the process: `freight resume` after a stop mid-hedge carries it on."""
    from typer.testing import CliRunner

    from freight.cli import app
    from freight.providers import get_provider
    from freight.runner.hedge import policy_for
    from freight.runner.loop import Runner

    clock = JumpingClock(lambda: any(b["n_succeeded"] > 0 for b in server_batches(stalled)))
    opts = freight.prepare(
        write_docs(tmp_path), prompt="Extract the vendor.\n\n{document}", provider="anthropic",
        model="claude-haiku-4-5", base_url=stalled.base_url, api_key=stalled.api_key, hedge_margin=MARGIN,
        sync_seconds=SYNC_SECONDS, deadline=datetime.fromtimestamp(clock.deadline, UTC).isoformat(),
    )  # fmt: skip
    db = str(tmp_path / "freight.db")
    with Store(db) as store:
        job = freight.Job.open(opts, store=store)
        provider = get_provider("anthropic", base_url=stalled.base_url, api_key=stalled.api_key)
        runner = Runner(store, provider, job.job_id, opts, hedge=policy_for(opts), wall_clock=clock)
        store.set_job_state(job.job_id, JobState.RUNNING)
        end = time.monotonic() + 60
        while not store.events(job.job_id, kind="hedge.started"):  # pass by pass, until the hedge is decided
            runner.step()
            assert time.monotonic() < end, "no hedge"
            time.sleep(0.05)
        store.set_job_state(job.job_id, JobState.STOPPED)  # the process stops here
    result = CliRunner().invoke(
        app, ["resume", job.job_id, "--db", db, "--poll-interval", "0.05"], env={"ANTHROPIC_API_KEY": stalled.api_key}
    )
    assert result.exit_code == 0, result.output
    assert f"{N} documents, {N} succeeded, 0 failed" in result.output
    in_batch = batch_results(stalled)
    canceled = [cid for cid, kind in in_batch.items() if kind == "canceled"]
    assert canceled and len([r for r in stalled.records() if r["batch_id"] is None]) == len(canceled)
