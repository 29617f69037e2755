"""Anthropic's batches carry no metadata: a batch submitted by a worker killed before it recorded the answer is found
again by its size and time. When two workers were killed that way on two jobs with batches of the same size, no one
can tell which batch is whose, and each job stops and says so, rather than guess or submit again."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from freight.domain import JobState
from freight.providers import get_provider
from freight.runner.job import RunOptions, open_job
from freight.runner.loop import Runner
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import env_for, freight, write_docs


def test_two_unrecorded_batches_of_one_size_stop_both_jobs_and_nothing_is_sent_twice(
    tmp_path: Path, pg_url: str
) -> None:
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        adapter = get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key)
        jobs = []
        with Store(pg_url) as store:
            for name in ("a", "b"):
                docs = write_docs(tmp_path / f"{name}.jsonl", name, 10)
                opts = RunOptions(
                    input=str(docs), provider="anthropic", model="scripted", base_url=srv.base_url,
                    id_field="id", text_field="text", allow_unpriced=True,
                )  # fmt: skip
                job, _ = open_job(store, opts)
                store.enqueue_job(job.job_id)
                # What a worker killed at `submit.after` leaves: a batch recorded `preparing`, accepted by the server.
                runner = Runner(store, adapter, job.job_id, opts)
                runner.create_first_requests()
                pending = list(store.iter_pending_requests(job.job_id))
                local = store.create_batch(job.job_id, "anthropic", [r.custom_id for r in pending])
                adapter.submit_batch(pending, ref=f"{job.job_id}-b{local}")
                jobs.append(job.job_id)
        env = env_for(srv.api_key, tmp_path / "home")
        worker = freight(env, "worker", "--db", pg_url, "--exit-when-idle", "--poll-interval", "0.05")
        assert worker.returncode == 0, worker.stderr
        sent = Counter(r["custom_id"] for r in srv.records() if r["batch_id"])
    assert len(sent) == 20 and max(sent.values()) == 1
    with Store(pg_url) as store:
        for job_id in jobs:
            assert store.get_job(job_id).state is JobState.STOPPED  # type: ignore[union-attr]
            assert f"{job_id} stopped" in worker.stderr
            assert f"freight resume {job_id} --resubmit-unacknowledged" in worker.stderr
            assert "2 batches at the provider could be it" in worker.stderr
