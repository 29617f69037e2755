"""The sample's valid replies are the job's: a document the sample answered validly is not sent again in a batch (and
not paid for twice); one the sample could not use is sent as any other."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from freight.cli import app
from freight.runner.job import RunOptions
from freight.runner.sample import load_samples
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import GOOD_PROMPT, write_folder, write_schema


def test_documents_the_sample_answered_validly_are_not_sent_again(tmp_path: Path, server: LocalServer) -> None:
    texts = {f"inv-{i:03d}": f"vendor: Vendor {i}\ntotal: {i}.50\nPlease pay soon." for i in range(40)}
    # The longest document is always sampled: its reply is cut at max_tokens once (a retry the run makes itself).
    texts["inv-long"] = "vendor: Long\ntotal: 1\n[[fault:tokens=400#cut]]\n" + "More terms. " * 30
    docs = write_folder(tmp_path / "docs", texts)
    (tmp_path / "p.txt").write_text(GOOD_PROMPT)
    env = {"ANTHROPIC_API_KEY": server.api_key, "FREIGHT_HOME": str(tmp_path / "home")}
    args = ["run", str(docs), "--prompt", str(tmp_path / "p.txt"), "--schema", str(write_schema(tmp_path))]
    args += ["--model", "claude-haiku-4-5", "--max-tokens", "200", "--sample", "--sample-size", "6"]
    args += ["--poll-interval", "0.05", "--db", str(tmp_path / "f.db"), "--base-url", server.base_url]
    args += ["--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "41 documents, 41 succeeded, 0 failed" in result.output

    records = server.records()
    assert len([r for r in records if not r["batch_id"]]) == 6  # the sample's synchronous requests
    batched = Counter(r["custom_id"] for r in records if r["batch_id"])
    assert max(batched.values()) == 1
    with Store(str(tmp_path / "f.db")) as store:
        (job,) = store.list_jobs()
        (gate,) = store.events(job.job_id, kind="sample.gate")
        notes = [e["data"]["message"] for e in store.events(job.job_id, kind="note")]
        (run,) = load_samples(store, RunOptions.from_config(job.config), ids=[gate["data"]["sample_id"]])
    sampled = {r["custom_id"] for r in run["results"]}
    assert len(sampled) == 6
    # The five the sample answered validly never went into a batch; the one it saw cut off did, once, and was then
    # retried with more room; every other document went in a batch once.
    cut = "inv-long"
    taken = {c for c in sampled if not c.startswith(cut)}
    assert len(taken) == 5 and not taken & set(batched)
    assert any(c.startswith(cut) for c in batched)
    assert sum(1 for c in batched if not c.startswith(cut)) == 35
    assert "5 document(s) the sample answered validly were taken as they were, not sent again" in notes

    # Their lines are the sample's replies, first pass, at no cost of their own: the sample's spend is counted once.
    lines = {x["id"]: x for x in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    for cid in taken:
        line = next(x for x in lines.values() if x["custom_ids"] == [cid])
        assert line["status"] == "succeeded" and line["first_pass"] and line["cost_usd"] == 0.0
        assert line["output"]["vendor"].startswith("Vendor")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["cost_by_fix"]["sample"] == gate["data"]["cost_usd"] > 0
    assert report["cost_usd"] == round(sum(report["cost_by_fix"].values()), 6)
