"""freight run against freight serve: every planted failure fixed or reported, each document exactly once, and the
server's own records show that only failed custom_ids were ever sent again."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from freight.domain import ItemState, JobState
from freight.providers import get_provider
from freight.runner.job import RunOptions, open_job
from freight.runner.loop import Runner
from freight.runner.report import build_report
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import PLANTED, SCHEMA

MODEL = "scripted-ctx-1200"  # a 1,200-token window: the long document overflows it


def _options(corpus: Path, provider: str, base_url: str) -> RunOptions:
    return RunOptions(
        input=str(corpus),
        provider=provider,
        model=MODEL,
        prompt="Extract the fields.\n\n{document}",
        schema=SCHEMA,
        max_tokens=120,
        max_retries=3,
        base_url=base_url,
    )


@pytest.mark.parametrize("provider", ["anthropic", "openai", "azure", "gemini"])
def test_every_planted_failure_ends_right_and_only_failures_are_resent(
    tmp_path: Path, corpus: Path, server: LocalServer, provider: str
) -> None:
    base = server.url_for(provider)
    opts = _options(corpus, provider, base)
    with Store(str(tmp_path / "f.db")) as store:
        job, resumed = open_job(store, opts)
        assert not resumed
        adapter = get_provider(provider, base_url=base, api_key=server.api_key)
        Runner(
            store,
            adapter,
            job.job_id,
            opts,
            poll_interval=0.05,
            sleep=lambda s: __import__("time").sleep(0.05),
            batch_size=8,
        ).run()
        report = build_report(store, job.job_id, write_to=tmp_path / "out")
        assert store.get_job(job.job_id).state is JobState.COMPLETED  # type: ignore[union-attr]

        # Each document exactly once, with the fate its planted failure calls for.
        lines = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
        assert sorted(x["id"] for x in lines) == sorted(PLANTED)
        fate = {x["id"]: x["status"] for x in lines}
        assert fate == {doc: want for doc, (_, want) in PLANTED.items()}
        by_id = {x["id"]: x for x in lines}
        assert by_id["truncated"]["fixes"] == ["raise_max_tokens"]
        assert by_id["bad-json"]["fixes"] == ["reask"]
        assert by_id["expired"]["fixes"] == ["resubmit"] and by_id["overloaded"]["fixes"] == ["resubmit"]
        assert set(by_id["too-long"]["fixes"]) == {"chunk"} and by_id["too-long"]["metadata"]["parts"] >= 2
        assert by_id["invalid"]["attempts"] == 1 and by_id["invalid"]["error"]["kind"] == "invalid_request"
        assert by_id["always-bad-json"]["attempts"] == 4  # first try + 3 retries, then given up
        # Re-asked once; then shown worked examples from similar documents that succeeded; then re-asked again.
        assert by_id["always-bad-json"]["fixes"] == ["reask", "few_shot", "reask"]
        assert by_id["plain-1"]["output"]["vendor"] and by_id["plain-1"]["first_pass"]
        failures = [json.loads(x)["id"] for x in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
        assert sorted(failures) == ["always-bad-json", "invalid"]
        assert report["documents"] == 12 and report["succeeded"] == 10 and report["failed"] == 2
        assert report["first_pass_success_rate"] == pytest.approx(3 / 12, abs=0.01)  # the three plain ones
        assert report["retries_by_fix"]["raise_max_tokens"] == 1

        # The server's side: every custom_id arrived once, and a retry only for a document that had failed.
        batch_records = [r for r in server.records() if r["batch_id"]]
        sent = Counter(r["custom_id"] for r in batch_records)
        assert max(sent.values()) == 1, [c for c, n in sent.items() if n > 1]
        first_pass_ok = {x["id"] for x in lines if x["first_pass"]}
        for cid in sent:
            doc = cid.split("-r")[0]
            if "-r" in cid:
                assert doc not in first_pass_ok, f"{cid} resubmitted although {doc} succeeded at once"
        assert {r["custom_id"] for r in batch_records} == {c for x in lines for c in x["custom_ids"]}
        assert all(it.state in (ItemState.SUCCEEDED, ItemState.FAILED) for it in store.iter_items(job.job_id))


def test_running_the_same_command_again_resumes_the_same_job(tmp_path: Path, corpus: Path, server: LocalServer) -> None:
    opts = _options(corpus, "anthropic", server.base_url)
    with Store(str(tmp_path / "f.db")) as store:
        job, _ = open_job(store, opts)
        again, resumed = open_job(store, opts)
        assert resumed and again.job_id == job.job_id
        changed = _options(corpus, "anthropic", server.base_url)
        changed.prompt = "Another prompt: {document}"
        other, resumed = open_job(store, changed)
        assert not resumed and other.job_id != job.job_id


def test_a_job_runs_on_either_store_backend(tmp_path: Path, corpus: Path, server: LocalServer, db_url: str) -> None:
    opts = _options(corpus, "anthropic", server.base_url)
    with Store(db_url) as store:
        job, _ = open_job(store, opts)
        adapter = get_provider("anthropic", base_url=server.base_url, api_key=server.api_key)
        Runner(
            store, adapter, job.job_id, opts, poll_interval=0.05, sleep=lambda s: __import__("time").sleep(0.05)
        ).run()
        report = build_report(store, job.job_id)
    assert report["documents"] == len(PLANTED)
    assert report["succeeded"] == sum(want == "succeeded" for _, want in PLANTED.values())


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_result_repeated_or_foreign_is_reported_and_never_taken(tmp_path: Path, provider: str) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5):
        (docs / f"d{i}.txt").write_text(f"Vendor: V{i}\nTotal: {i}")
    with LocalServer(tmp_path / "s.db", time_scale=0.0002, faults="duplicate_results=1,foreign_results=1") as srv:
        base = srv.url_for(provider)
        opts = RunOptions(input=str(docs), provider=provider, model="claude-haiku-4-5", schema=SCHEMA, base_url=base)
        with Store(str(tmp_path / "f.db")) as store:
            job, _ = open_job(store, opts)
            adapter = get_provider(provider, base_url=base, api_key=srv.api_key)
            Runner(store, adapter, job.job_id, opts, poll_interval=0.05, sleep=lambda s: None).run()
            notes = [e["data"]["message"] for e in store.events(job.job_id, kind="note")]
            report = build_report(store, job.job_id)
    assert report["documents"] == 5 and report["succeeded"] == 5 and report["retries_by_fix"] == {}
    assert any("arrived twice" in n for n in notes), notes
    assert any("not-in-this-batch" in n and "never sent" in n for n in notes), notes
