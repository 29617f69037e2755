"""The dashboard in headless Chromium over a real finished job: the jobs page, a job's page, and a document's lineage
followed by clicking through a chunk-and-merge and a re-ask; no page shows the key the run had."""

from __future__ import annotations

import re
from typing import Any

import httpx

from freight.store import Store

from .conftest import FAKE_KEY, RanJob, serving


def test_the_jobs_page_shows_the_job_its_progress_first_pass_and_cost(
    page: Any, ui_url: str, finished_job: RanJob
) -> None:
    page.goto(ui_url + "/")
    row = page.locator(f'tr[data-job="{finished_job.job_id}"]')
    assert row.locator('[data-live="state"]').inner_text() == "completed"
    assert row.locator('[data-live="done"]').inner_text() == "12"
    assert row.locator('[data-live="first_pass_rate"]').inner_text() == "25%"  # the three plain documents of twelve
    assert row.locator('[data-live="cost_usd"]').inner_text().startswith("$")
    assert "http://127.0.0.1:" in row.inner_text() and "scripted-ctx-1200" in row.inner_text()
    # Filter by state: the job is under "completed", and the running filter is not offered (no running job).
    page.get_by_role("link", name=re.compile(r"^completed \(1\)")).click()
    assert page.url.endswith("?state=completed")
    assert page.locator(f'tr[data-job="{finished_job.job_id}"]').count() == 1
    page.goto(ui_url + "/?state=running")
    assert page.locator("tr[data-job]").count() == 0 and "No job in state running" in page.inner_text("main")


def test_a_job_page_shows_batches_failures_by_reason_and_what_each_fix_achieved(
    page: Any, ui_url: str, finished_job: RanJob
) -> None:
    page.goto(ui_url + "/")
    page.locator(f'tr[data-job="{finished_job.job_id}"] a.job-link').click()
    page.wait_for_url(re.compile(f"/jobs/{finished_job.job_id}$"))
    assert page.locator('[data-live="succeeded"]').first.inner_text() == "10"
    assert page.locator('[data-live="failed"]').first.inner_text() == "2"
    assert page.locator("svg[aria-label='batches timeline'] rect.batch[data-state='ended']").count() >= 2
    # Every outcome of the run is a mark in the results chart: the counts of its columns add up.
    marks = page.locator("svg[aria-label='results over time'] rect.bucket")
    assert sum(int(marks.nth(i).get_attribute("data-count")) for i in range(marks.count())) >= 12
    failures = page.locator("section.cols").first.inner_text()
    assert "validation_failed · 1" in failures and "invalid_request · 1" in failures
    reask = page.locator('tr[data-fix="reask"] td')
    # Re-asked for two documents (bad-json, always-bad-json); one of them ended succeeded.
    assert [reask.nth(i).inner_text() for i in range(1, 4)] == ["3", "2", "1"]
    assert page.locator('tr[data-fix="chunk"]').count() == 1 and page.locator('tr[data-fix="first_pass"]').count() == 1


def test_following_a_chunked_document_shows_each_part_and_the_merged_output(
    page: Any, ui_url: str, finished_job: RanJob
) -> None:
    page.goto(f"{ui_url}/jobs/{finished_job.job_id}")
    page.locator("a.doc-link", has_text="too-long").click()
    assert page.locator("#doc-state").inner_text() == "succeeded"
    first = page.locator("#lineage > li.step").first
    assert first.locator(".fix").first.inner_text() == "first request"
    assert "context_overflow" in first.locator(".problem").first.inner_text()
    parts = first.locator(":scope > ul.tree > li.step")
    labels = [parts.nth(i).locator(".fix").first.inner_text() for i in range(parts.count())]
    assert len(labels) >= 2 and all(
        re.fullmatch(rf"chunk · part {i + 1} of {len(labels)}", x) for i, x in enumerate(labels)
    ), labels
    # The request each part sent is its own slice of the document; the merged output is shown at the end.
    parts.nth(1).locator(":scope > details > summary", has_text="request sent").click()
    assert "Section" in parts.nth(1).locator(":scope > details > pre").first.inner_text()
    assert '"vendor"' in page.locator("#output").inner_text()


def test_following_a_reask_shows_the_validation_message_at_each_step(
    page: Any, ui_url: str, finished_job: RanJob
) -> None:
    page.goto(f"{ui_url}/jobs/{finished_job.job_id}")
    # From the failures grouped by reason, to the document that failed validation for good.
    page.locator("ul.groups a", has_text="always-bad-json").first.click()
    assert page.locator("#doc-state").inner_text() == "failed"
    fixes = page.locator("#lineage li.step > .step-head .fix")
    assert [fixes.nth(i).inner_text() for i in range(fixes.count())] == ["first request", "reask", "few_shot", "reask"]
    problems = page.locator("#lineage .problem")
    assert problems.count() == 4 and all("not valid JSON" in problems.nth(i).inner_text() for i in range(4))
    # The re-ask quoted the reply and the validation error back: the request it sent shows it.
    second = page.locator("#lineage li.step").nth(1)
    second.locator(":scope > details > summary", has_text="request sent").click()
    assert "not valid JSON" in second.locator(":scope > details > pre").first.inner_text()
    assert page.locator("#output").count() == 0 and "none (failed)" in page.inner_text("main")

    page.goto(f"{ui_url}/jobs/{finished_job.job_id}/documents/bad-json")
    steps = page.locator("#lineage li.step")
    assert steps.count() == 2 and page.locator("#doc-state").inner_text() == "succeeded"
    assert steps.nth(1).locator(".problem").count() == 0  # the re-asked reply was taken
    assert '"vendor": "vendor-value"' in page.locator("#output").inner_text()


def _every_page(base: str, job_id: str, item_ids: list[str]) -> list[str]:
    return [
        f"{base}/",
        f"{base}/?state=completed",
        f"{base}/jobs/{job_id}",
        f"{base}/jobs/{job_id}?state=failed",
        f"{base}/jobs/{job_id}/cancel",
        f"{base}/jobs/{job_id}/resume",
        f"{base}/jobs/{job_id}/charts",
        f"{base}/api/jobs",
        *(f"{base}/jobs/{job_id}/documents/{i}" for i in item_ids),
    ]


def test_no_page_shows_the_key_the_run_had(page: Any, ui_url: str, finished_job: RanJob) -> None:
    with Store(finished_job.db) as store:
        item_ids = [it.item_id for it in store.iter_items(finished_job.job_id)]
    for url in _every_page(ui_url, finished_job.job_id, item_ids):
        page.goto(url)
        for details in page.locator("details").all():
            details.evaluate("d => d.open = true")
        assert FAKE_KEY not in page.content(), url
        assert FAKE_KEY[:20] not in page.inner_text("body"), url


def test_a_key_that_leaked_into_the_store_is_redacted_on_the_page(
    finished_job: RanJob, tmp_path: Any, monkeypatch: Any
) -> None:
    """A provider's error message that echoed the key: the note is shown, the key is not."""
    import os
    import shutil

    db = str(tmp_path / "copy.db")
    for suffix in ("", "-wal", "-shm"):  # the store is in WAL mode: its last commits may be in the -wal file
        if os.path.exists(finished_job.db + suffix):
            shutil.copy(finished_job.db + suffix, db + suffix)
    with Store(db) as store:
        store.log(finished_job.job_id, "note", message=f"upstream said: invalid x-api-key {FAKE_KEY}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    with serving(db) as base:
        html = httpx.get(f"{base}/jobs/{finished_job.job_id}", timeout=30).text
    assert "upstream said: invalid x-api-key [redacted]" in html and FAKE_KEY not in html
