"""`freight run --dry-run` / `freight estimate`: nothing sent for inference, and the forecast holds against the real
run's bill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import freight
from freight.cli import app
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import MODEL, PROMPT, SCHEMA, settings, write_corpus


def test_a_dry_run_of_1000_documents_sends_only_counting_calls_and_the_real_bill_is_within_its_bar(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = write_corpus(tmp_path, 1000)
    db = str(tmp_path / "f.db")
    with Store(db) as store:
        # A sample of the same prompt gives the dry run its observed output per document.
        freight.sample(docs, size=8, store=store, **settings(server, docs))
    sent_before = len(server.records())
    assert sent_before == 8  # the sample's synchronous requests, and nothing else yet

    (tmp_path / "prompt.txt").write_text(PROMPT)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    monkeypatch.setenv("ANTHROPIC_API_KEY", server.api_key)
    monkeypatch.setenv("FREIGHT_HOME", str(tmp_path / "home"))
    files = ["-p", str(tmp_path / "prompt.txt"), "-s", str(tmp_path / "schema.json")]
    where = ["--model", MODEL, "--base-url", server.base_url, "--max-tokens", "200", "--db", db]
    args = ["run", str(docs), *files, *where, "--dry-run"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    forecast = json.loads(result.stdout)

    assert len(server.records()) == sent_before  # not one inference request
    counts = server.counts()
    assert len(counts) == forecast["counted"] == 200  # a stratified sample of the 1,000, each counted once
    assert {c["dialect"] for c in counts} == {"anthropic"}
    assert forecast["documents"] == forecast["requests"] == 1000
    assert not forecast["exact"] and forecast["input_tokens_error"] > 0
    assert forecast["output_from_sample"] is not None and forecast["over_window"] == []
    assert forecast["batches"] == 1
    with Store(db) as store:
        assert store.list_jobs() == []  # a dry run makes no job

    for command in (args, ["estimate", *args[1:-1]]):  # `freight estimate` is `freight run --dry-run`
        text = CliRunner().invoke(app, command)
        assert text.exit_code == 0, text.output
        assert "nothing was sent" in text.stdout and "+/-" in text.stdout and "(95%)" in text.stdout
    assert len(server.records()) == sent_before

    report = freight.run(docs, db=db, sample=False, poll_interval=0.05, **settings(server, docs))
    assert report.succeeded == 1000
    batch = forecast["cost"]["batch"]
    assert report.cost_usd is not None
    assert abs(report.cost_usd - batch["expected_usd"]) <= batch["error_usd"] + 1e-9
    assert report.cost_usd <= batch["worst_usd"]
    spent_in = report.data["tokens"]["input_tokens"]
    assert abs(spent_in - forecast["input_tokens"]) <= forecast["input_tokens_error"]


def test_a_small_input_is_counted_request_by_request_and_exactly(tmp_path: Path, server: LocalServer) -> None:
    docs = write_corpus(tmp_path, 12)
    forecast = freight.estimate(docs, store=Store(str(tmp_path / "f.db")), **settings(server, docs))
    assert forecast["exact"] and forecast["counted"] == 12 and forecast["input_tokens_error"] == 0
    assert forecast["output_tokens_expected"] is None  # no sample stored: only the worst case is known
    assert forecast["output_tokens_worst"] == 12 * 200
    assert server.records() == []
    report = freight.run(docs, db=str(tmp_path / "f.db"), sample=False, poll_interval=0.05, **settings(server, docs))
    assert report.data["tokens"]["input_tokens"] == forecast["input_tokens"]
    assert report.cost_usd is not None and report.cost_usd <= forecast["cost"]["batch"]["worst_usd"]
