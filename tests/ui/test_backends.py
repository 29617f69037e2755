"""The dashboard's SQL on both store backends (SQLite and PostgreSQL): the same real run reads the same on each."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from freight.server.testing import LocalServer
from freight.store import Store
from runner.conftest import write_corpus

from .conftest import run_job, serving


def test_every_page_reads_the_same_job_on_either_backend(tmp_path: Path, db_url: str) -> None:
    corpus = write_corpus(tmp_path)
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv, Store(db_url) as store:
        runner = run_job(store, srv, corpus)
        runner.run()
    job = runner.job_id
    with serving(db_url) as base, httpx.Client(base_url=base, timeout=60) as client:
        live = client.get(f"/api/jobs?job={job}").json()["jobs"][0]
        assert (live["state"], live["documents"], live["succeeded"], live["failed"]) == ("completed", 12, 10, 2)
        assert live["first_pass_rate"] == 0.25 and live["cost_usd"] is not None
        page = client.get(f"/jobs/{job}").text
        assert "validation_failed</b> · 1" in page and "invalid_request</b> · 1" in page
        assert 'data-fix="reask"><td>reask</td><td>3</td><td>2</td><td>1</td>' in page
        charts = client.get(f"/jobs/{job}/charts").text
        assert charts.count('class="bucket"') >= 1 and charts.count('class="batch"') >= 2
        doc = client.get(f"/jobs/{job}/documents/too-long").text
        assert "chunk · part 1 of" in doc and "context_overflow" in doc
        assert client.get("/?state=completed").text.count(f'data-job="{job}"') == 1
        failed = client.get(f"/jobs/{job}?state=failed").text
        assert re.findall(r'class="doc-link">([^<]+)<', failed) == ["always-bad-json", "invalid"]
