"""results.jsonl at the end of a run: the lines the feed wrote while the job ran, put in input order, are the same
file (byte for byte) as the lines built again from the store; and when a document's line changed after the feed wrote
it, the file is built from the store instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from freight.runner.feed import ResultsFeed
from freight.runner.report import build_report
from freight.server.testing import LocalServer
from freight.store import Store
from freight.store.schema import outcomes

from .conftest import PLANTED


def _run(corpus: Path, server: LocalServer, db: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        sys.executable, "-m", "freight", "run", str(corpus), "--schema", str(corpus.parent / "schema.json"),
        "--model", "scripted-ctx-1200", "--max-tokens", "120", "--base-url", server.base_url, "--db", db,
        "--poll-interval", "0.05", "--batch-size", "3", "--out", str(out), *extra,
    ]  # fmt: skip
    env = {**os.environ, "ANTHROPIC_API_KEY": server.api_key}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def test_the_feeds_lines_in_input_order_are_the_stores_file(tmp_path: Path, corpus: Path, server: LocalServer) -> None:
    db, out = str(tmp_path / "f.db"), tmp_path / "out"
    done = _run(corpus, server, db, out)
    assert done.returncode == 0, done.stderr
    written = (out / "results.jsonl").read_bytes()
    failures = (out / "failures.jsonl").read_bytes()
    ids = [json.loads(x)["id"] for x in written.splitlines()]
    assert ids == sorted(PLANTED), "one line per document, in input order (the files' order)"
    with Store(db) as store:
        (job,) = store.list_jobs()
        again = build_report(store, job.job_id, write_to=tmp_path / "again")
    assert (tmp_path / "again" / "results.jsonl").read_bytes() == written
    assert (tmp_path / "again" / "failures.jsonl").read_bytes() == failures
    report = json.loads((out / "report.json").read_text())
    assert report["documents"] == again["documents"] == len(PLANTED)
    assert report["failed_by_reason"] == again["failed_by_reason"] and report["failed"] == 2
    assert report["cost_by_fix"] == again["cost_by_fix"]


def test_a_line_that_changed_after_it_was_written_is_built_from_the_store(
    tmp_path: Path, corpus: Path, server: LocalServer
) -> None:
    db, out = str(tmp_path / "f.db"), tmp_path / "out"
    assert _run(corpus, server, db, out).returncode == 0
    with Store(db) as store:
        (job,) = store.list_jobs()
        assert not store.changed_after_final(job.job_id)
        feed = ResultsFeed(store, job.job_id, out)
        feed.update(len(PLANTED))  # every document's line, as a run's feed writes them
        # Then an answer is recorded for a document that is final already, as another part of a split document or a
        # duplicate the hedge allowed would be: its line's cost is not what the feed wrote.
        first = json.loads((out / "results.jsonl").read_bytes().splitlines()[0])
        with store.engine.begin() as conn:
            conn.execute(
                outcomes.update()
                .where(outcomes.c.job_id == job.job_id, outcomes.c.custom_id == first["custom_ids"][0])
                .values(cost_usd=123.0, recorded_at=datetime.now(UTC) + timedelta(hours=1))
            )
        assert store.changed_after_final(job.job_id)
        build_report(store, job.job_id, write_to=out, written=feed)
    lines = {x["id"]: x for x in map(json.loads, (out / "results.jsonl").read_bytes().splitlines())}
    assert lines[first["id"]]["cost_usd"] >= 123.0, "the line was taken from the feed, not built from the store"
    assert sorted(lines) == sorted(PLANTED)
