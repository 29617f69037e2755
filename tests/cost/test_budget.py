"""`--max-cost`: the runner never submits work whose worst case would take the job over the cap; at the cap the job
stops for a human, and `resume --max-cost N` carries it on to the end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from tests.cost.conftest import settings, write_corpus
from typer.testing import CliRunner

import freight
from freight.cli import app
from freight.domain import JobState
from freight.runner.budget import CostCapReached
from freight.server.testing import LocalServer
from freight.store import Store


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
    assert "60 succeeded" in result.stdout and "cost cap:" in result.stdout and "everything done" in result.stdout
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
