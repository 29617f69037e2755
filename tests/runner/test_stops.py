"""The runner's bounds and the fixes nobody had tested: poll backoff, a whole batch expiring, the fallback prompt,
a batch whose submission was never acknowledged, a refused batch releasing its requests, provider states as facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.domain import Batch, BatchState, ExitCode, JobState, JobStopped, Message, Request
from freight.providers import get_provider
from freight.providers.retry import RetryPolicy
from freight.runner.job import RunOptions, open_job
from freight.runner.loop import Runner
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import SCHEMA

cli = CliRunner()
MODEL = "claude-haiku-4-5"


def _docs(root: Path, n: int) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(n):
        (docs / f"d{i:03d}.txt").write_text(f"Vendor: V{i}\nTotal: {i}")
    return docs


class _Enough(Exception):
    pass


def test_poll_backoff_grows_by_half_up_to_its_cap(tmp_path: Path) -> None:
    # At time scale 1 the batch sits in validation for seconds, so every poll after the submit finds nothing new.
    with LocalServer(tmp_path / "s.db", time_scale=1.0) as srv, Store(str(tmp_path / "f.db")) as store:
        opts = RunOptions(input=str(_docs(tmp_path, 2)), provider="anthropic", model=MODEL, base_url=srv.base_url)
        job, _ = open_job(store, opts)
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 6:
                raise _Enough

        provider = get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key)
        runner = Runner(store, provider, job.job_id, opts, poll_interval=1.0, max_poll_interval=4.0, sleep=sleep)
        with pytest.raises(_Enough):
            runner.run()
        assert sleeps == [1.5, 2.25, 3.375, 4.0, 4.0, 4.0]
        assert store.lease_holder(job.job_id) is None  # released even when the run ends by an exception


def test_a_whole_batch_that_expires_keeps_what_finished_and_resubmits_the_rest(tmp_path: Path) -> None:
    # OpenAI reports such a batch `expired` (Anthropic: `ended`, with expired counts). A 40 s window (emulated; the
    # queue alone takes 30 s) is too short for 200 requests on 4 workers: part is done, the rest expires.
    with (
        LocalServer(tmp_path / "s.db", time_scale=0.01, faults="window=40") as srv,
        Store(str(tmp_path / "f.db")) as store,
    ):
        opts = RunOptions(
            input=str(_docs(tmp_path, 200)),
            provider="openai",
            model="gpt-4o-mini",
            base_url=srv.openai_base_url,
            max_retries=5,
        )
        job, _ = open_job(store, opts)
        provider = get_provider("openai", base_url=srv.openai_base_url, api_key=srv.api_key)
        Runner(store, provider, job.job_id, opts, poll_interval=0.05, sleep=lambda s: None).run()
        records = srv.records()
        first = store.batches(job.job_id)[0]
        assert first["state"] == "expired", first
        assert 0 < first["counts"]["succeeded"] < 200, first["counts"]
        assert store.item_counts(job.job_id) == {"succeeded": 200}
        first_ids = {r["custom_id"] for r in records if r["batch_id"] == first["provider_batch_id"]}
        resubmitted = {r["item_id"] for r in store.requests_where(job.job_id, fix="resubmit")}
        # Exactly the expired ones were sent again: none that finished in the first batch.
        assert len(resubmitted) == 200 - first["counts"]["succeeded"]
        done_first = {
            r["item_id"]
            for r in store.requests_where(job.job_id, batch_id=first["id"])
            if store.get_outcome(job.job_id, r["custom_id"]).status == "succeeded"  # type: ignore[union-attr]
        }
        assert len(done_first) == first["counts"]["succeeded"] and not done_first & resubmitted
        assert len(first_ids) == 200


def test_fallback_prompt_is_used_after_the_reask_fails(tmp_path: Path) -> None:
    docs = _docs(tmp_path, 1)
    (tmp_path / "prompt.txt").write_text("Extract [[fault:malformed_json:always#p]] the fields as JSON:\n{document}")
    (tmp_path / "fallback.txt").write_text("Just the vendor and total as JSON:\n{document}")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    db = str(tmp_path / "f.db")
    with LocalServer(tmp_path / "s.db", time_scale=0.0002) as srv:
        result = cli.invoke(
            app,
            ["run", str(docs), "--prompt", str(tmp_path / "prompt.txt"), "--fallback-prompt",
             str(tmp_path / "fallback.txt"), "--schema", str(tmp_path / "schema.json"), "--base-url", srv.base_url,
             "--db", db, "--out", str(tmp_path / "out"), "--poll-interval", "0.05", "--model", MODEL],
            env={"ANTHROPIC_API_KEY": srv.api_key},
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert line["status"] == "succeeded" and set(line["output"]) >= {"vendor", "total"}
    with Store(db) as store:
        (job,) = store.list_jobs()
        fixes = [r["fix"] for r in store.requests_where(job.job_id)]
        assert fixes == [None, "reask", "fallback_prompt"]
        last = store.requests_where(job.job_id, fix="fallback_prompt")[0]["request"]
        assert last.messages[-1].text().startswith("Just the vendor and total")


def test_an_unacknowledged_batch_with_two_candidates_stops_then_resubmits_when_told(
    tmp_path: Path, db_url: str
) -> None:
    with LocalServer(tmp_path / "s.db", time_scale=0.0002) as srv:
        opts = RunOptions(input=str(_docs(tmp_path, 2)), provider="anthropic", model=MODEL, base_url=srv.base_url)
        provider = get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key)
        with Store(db_url) as store:
            job, _ = open_job(store, opts)
            runner = Runner(store, provider, job.job_id, opts, poll_interval=0.05, sleep=lambda s: None)
            runner.create_first_requests()
            cids = [r.custom_id for r in store.iter_pending_requests(job.job_id)]
            store.create_batch(job.job_id, "anthropic", cids)  # recorded, then the run died before hearing back
            # Two batches of the same size at the provider: either could be it (Anthropic keeps no metadata).
            for n in range(2):
                other = [
                    Request(
                        custom_id=f"o{n}{i}", model=MODEL, max_tokens=5, messages=[Message(role="user", content="x")]
                    )
                    for i in range(2)
                ]
                provider.submit_batch(other)
            with pytest.raises(JobStopped) as err:
                runner.run()
            assert "--resubmit-unacknowledged" in str(err.value) and "2 batches at the provider" in str(err.value)
            stopped = store.get_job(job.job_id)
            assert stopped is not None and stopped.state is JobState.STOPPED
            assert [r["custom_id"] for r in srv.records() if r["custom_id"] in cids] == []  # nothing sent on a guess
        plain = cli.invoke(app, ["resume", job.job_id, "--db", db_url], env={"ANTHROPIC_API_KEY": srv.api_key})
        assert plain.exit_code == ExitCode.STOPPED and "--resubmit-unacknowledged" in plain.output
        told = cli.invoke(
            app,
            ["resume", job.job_id, "--db", db_url, "--resubmit-unacknowledged", "--poll-interval", "0.05"],
            env={"ANTHROPIC_API_KEY": srv.api_key},
        )
        assert told.exit_code == 0, told.output
        assert sorted(r["custom_id"] for r in srv.records() if r["custom_id"] in cids) == sorted(cids)
    with Store(db_url) as store:
        assert store.item_counts(job.job_id) == {"succeeded": 2}


def test_a_refused_batch_releases_its_other_requests(tmp_path: Path) -> None:
    with LocalServer(tmp_path / "s.db", time_scale=0.0002) as srv, Store(str(tmp_path / "f.db")) as store:
        opts = RunOptions(input=str(_docs(tmp_path, 3)), provider="anthropic", model=MODEL, base_url=srv.base_url)
        job, _ = open_job(store, opts)
        runner = Runner(store, get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key), job.job_id, opts)
        runner.create_first_requests()
        cids = [r.custom_id for r in store.iter_pending_requests(job.job_id)]
        local = store.create_batch(job.job_id, "anthropic", cids)
        assert store.fail_unsubmitted_batch(local, "refused: d001 is too large") == 3
        assert [r.custom_id for r in store.iter_pending_requests(job.job_id)] == cids  # packed again next pass


def test_an_unexpected_provider_sequence_is_recorded_and_noted(tmp_path: Path) -> None:
    # OpenAI can report `finalizing -> cancelled`: a fact to record and show, never an exception.
    with LocalServer(tmp_path / "s.db", time_scale=0.0002) as srv, Store(str(tmp_path / "f.db")) as store:
        opts = RunOptions(input=str(_docs(tmp_path, 1)), provider="openai", model="gpt-4o-mini")
        job, _ = open_job(store, opts)
        provider = get_provider("openai", base_url=srv.openai_base_url, api_key=srv.api_key)
        runner = Runner(store, provider, job.job_id, opts)
        runner.create_first_requests()
        (cid,) = [r.custom_id for r in store.iter_pending_requests(job.job_id)]
        local = store.create_batch(job.job_id, "openai", [cid])
        store.mark_submitted(local, Batch(provider="openai", provider_batch_id="b1", state=BatchState.SUBMITTED))
        store.update_batch(local, Batch(provider="openai", provider_batch_id="b1", state=BatchState.FINALIZING))
        (row,) = store.batches(job.job_id)
        runner._update(row, Batch(provider="openai", provider_batch_id="b1", state=BatchState.CANCELED))
        assert store.batches(job.job_id)[0]["state"] == "canceled"
        (note,) = runner.snapshot().notes
        assert "b1 went from finalizing to canceled" in note


def test_a_results_download_that_keeps_failing_stops_the_job_within_its_bound(tmp_path: Path) -> None:
    with (
        LocalServer(tmp_path / "s.db", time_scale=0.0002, faults="drop_results=1") as srv,
        Store(str(tmp_path / "f.db")) as store,
    ):
        opts = RunOptions(input=str(_docs(tmp_path, 6)), provider="anthropic", model=MODEL, base_url=srv.base_url)
        job, _ = open_job(store, opts)
        # The adapter's own backoff between its attempts (up to 6, 1 s doubling) is not what this test is about: it
        # would spend about 45 s sleeping here. Each read still fails all of its attempts.
        no_waits = RetryPolicy(sleep=lambda s: None)
        provider = get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key, retry=no_waits)
        seen: list[list[str]] = []
        runner = Runner(
            store,
            provider,
            job.job_id,
            opts,
            poll_interval=0.01,
            sleep=lambda s: None,
            max_transient_failures=2,
            on_progress=lambda snap: seen.append(snap.notes),
        )
        with pytest.raises(JobStopped) as err:
            runner.run()
        assert "reading the results of batch" in str(err.value) and "3 times in a row" in str(err.value)
        stopped = store.get_job(job.job_id)
        assert stopped is not None and stopped.state is JobState.STOPPED
        # Each failure was shown as it happened, once.
        shown = [n for notes in seen for n in notes if "reading the results" in n]
        assert len(shown) == 2 and len(set(shown)) <= 2
