"""`--max-cost`: the runner never submits work whose worst case would take the job over the cap; at the cap the job
stops for a human, and `resume --max-cost N` carries it on to the end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import freight
from freight.cli import app
from freight.domain import JobState
from freight.runner.budget import CostCapReached
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import settings, write_corpus


def test_half_the_estimate_stops_before_exceeding_it_and_a_higher_cap_completes(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = write_corpus(tmp_path, 60)
    db = str(tmp_path / "f.db")
    store = Store(db)
    freight.sample(docs, size=6, store=store, **settings(server, docs))
    forecast = freight.estimate(docs, store=store, **settings(server, docs))
    cap = forecast["cost"]["batch"]["expected_usd"] / 2
    sample_sent = len(server.records())

    with pytest.raises(CostCapReached, match="cost cap") as stopped:
        freight.run(docs, store=store, sample=False, poll_interval=0.05, max_cost=cap,
                    **settings(server, docs, batch_size=10))  # fmt: skip
    assert stopped.value.exit_code == 1
    job_id = store.list_jobs()[0].job_id
    report = freight.Job.find(job_id, store=store).report().data
    assert report["state"] == JobState.STOPPED.value
    assert report["cost_usd"] <= cap
    assert report["cost_cap"]["max_cost_usd"] == pytest.approx(cap)
    assert 0 < report["cost_cap"]["undone"] < 60 and report["succeeded"] == 60 - report["cost_cap"]["undone"]
    attention = store.events(job_id, kind="job.needs_attention")
    assert [e["data"]["reason"] for e in attention] == ["cost_cap"]
    sent = [r for r in server.records()[sample_sent:] if r["batch_id"]]
    assert len(sent) == report["succeeded"]  # nothing was submitted beyond what the cap allowed

    monkeypatch.setenv("ANTHROPIC_API_KEY", server.api_key)
    result = CliRunner().invoke(
        app, ["resume", job_id, "--db", db, "--max-cost", str(cap * 4), "--poll-interval", "0.05"]
    )
    assert result.exit_code == 0, result.output
    assert "60 succeeded" in result.stdout and "cost cap:" in result.stdout and "nothing left undone" in result.stdout
    job = store.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED
    assert store.totals(job_id)["cost_usd"] <= cap * 4
    sent = Counter(r["custom_id"] for r in server.records()[sample_sent:] if r["batch_id"])
    assert len(sent) == 60 and set(sent.values()) == {1}  # each document submitted once, across both runs


def test_a_cap_below_the_first_request_submits_nothing(tmp_path: Path, server: LocalServer) -> None:
    docs = write_corpus(tmp_path, 5)
    store = Store(str(tmp_path / "f.db"))
    with pytest.raises(CostCapReached, match=r"cost cap \$0\.0000 reached: spent \$0\.0000; 5 document"):
        freight.run(docs, store=store, sample=False, poll_interval=0.05, max_cost=1e-7, **settings(server, docs))
    assert [r for r in server.records() if r["batch_id"]] == []


def test_max_cost_cancel_cancels_the_batches_in_flight_and_submits_nothing_more(tmp_path: Path) -> None:
    # A slow server (a batch queues 3 s): the batches are still in flight when the cap is reached.
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.1) as slow:
        docs = write_corpus(tmp_path, 20)
        store = Store(str(tmp_path / "f.db"))
        worst = freight.estimate(docs, store=store, **settings(slow, docs))["cost"]["batch"]["worst_usd"]
        with pytest.raises(CostCapReached):
            freight.run(docs, store=store, sample=False, poll_interval=0.05, max_cost=worst / 2,
                        max_cost_cancel=True, **settings(slow, docs, batch_size=4))  # fmt: skip
        job_id = store.list_jobs()[0].job_id
        submitted = {r["custom_id"] for r in slow.records() if r["batch_id"]}
        assert 0 < len(submitted) <= 12  # what fit under half the worst case, and nothing after the cap
        assert {b["state"] for b in store.batches(job_id)} == {"canceled"}
        notes = [e["data"]["message"] for e in store.events(job_id, kind="note")]
        assert any("canceling" in n and "cost cap" in n for n in notes)
        assert store.events(job_id, kind="job.needs_attention")
