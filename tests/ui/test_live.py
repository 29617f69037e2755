"""A running job in the browser: its numbers change on the page with no reload, and a cancel through the dashboard's
confirmation reaches the provider. The server's engine is held (tests/runner/held_engine.py), so nothing ends before
the test lets it: every wait is on something the page shows, never on time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freight import api
from freight.domain import JobState
from freight.server.testing import LocalServer
from freight.store import Store
from runner import held_engine

from .conftest import FAKE_KEY, options, serving

DOCS = 6


@dataclass
class Running:
    db: str
    job_id: str
    thread: threading.Thread
    errors: list[BaseException]


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    """A job submitted to a held server, its runner (`freight.api.resume`) in a thread, a batch at the engine."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)  # as in the user's shell: the dashboard's cancel reads it too
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(DOCS):
        (docs / f"inv-{i}.txt").write_text(f"Invoice from Vendor {i}. Total {i}.")
    held_engine.install()
    db = str(tmp_path / "f.db")
    with LocalServer(tmp_path / "serve.db", engine=held_engine.NAME, time_scale=0.0002, api_key=FAKE_KEY) as srv:
        try:
            with Store(db) as store:
                job = api.Job.open(options(docs, srv.base_url), store=store)
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    api.resume(job.job_id, db=db, api_key=FAKE_KEY, poll_interval=0.05)
                except BaseException as exc:  # noqa: BLE001 - the test reports it
                    errors.append(exc)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            assert held_engine.arrived.wait(60), "no request reached the engine"
            yield Running(db, job.job_id, thread, errors)
        finally:
            held_engine.release.set()
            thread.join(120)


def _text_is(selector: str, value: str) -> str:
    # Null-safe: after a form's POST the browser is between pages for a moment and the element is not there yet.
    return f"() => document.querySelector({selector!r})?.textContent.trim() === {value!r}"


def test_a_running_jobs_counts_change_on_the_page_without_a_reload(page: Any, running: Running) -> None:
    with serving(running.db, poll_ms=200) as base:
        page.goto(f"{base}/jobs/{running.job_id}")
        assert page.locator("#n-succeeded").inner_text() == "0"
        assert page.locator('[data-live="state"]').first.inner_text() == "running"
        assert "No results yet." in page.inner_text("#charts")
        page.evaluate("() => { window.stayed = true; }")  # gone if the page is reloaded

        held_engine.release.set()  # the batch's replies go through; the runner ingests them
        page.wait_for_function(_text_is("#n-succeeded", str(DOCS)), timeout=60_000)
        page.wait_for_function(_text_is('[data-live="state"]', "completed"), timeout=60_000)
        page.wait_for_selector("svg[aria-label='results over time'] rect.bucket", timeout=60_000)
        assert page.evaluate("() => window.stayed") is True
        assert page.locator('[data-live="percent"]').first.inner_text() == "100%"
        # The jobs page polls the same way; the job's row reads the same numbers.
        page.goto(f"{base}/")
        assert page.locator(f'tr[data-job="{running.job_id}"] [data-live="done"]').inner_text() == str(DOCS)
    running.thread.join(60)
    assert not running.errors


def test_cancel_asks_for_confirmation_then_cancels_through_the_library(page: Any, running: Running) -> None:
    with serving(running.db, poll_ms=200) as base:
        page.goto(f"{base}/jobs/{running.job_id}")
        page.get_by_role("link", name="Cancel job…").click()
        assert "This cannot be undone" in page.inner_text("main")
        assert Store(running.db).get_job(running.job_id).state.value == "running"  # type: ignore[union-attr]
        page.locator("#confirm").click()
        page.wait_for_url(f"{base}/jobs/{running.job_id}")
        # The runner is asked to stop, the provider's batch is canceling; the replies already at the engine finish.
        page.wait_for_function(_text_is('[data-live="state"]', "canceling"), timeout=60_000)
        held_engine.release.set()
        page.wait_for_function(_text_is('[data-live="state"]', "canceled"), timeout=90_000)
        # Every document has a final state (the replies already at the engine count), none is left in flight.
        page.wait_for_function(_text_is('[data-live="done"]', str(DOCS)), timeout=60_000)
        page.reload()
        assert "cancel done" in page.inner_text(".actions")
        # The runner that held the job was asked to stop, and said so in the job's notes.
        assert "the job is being canceled" in page.inner_text("ul.notes")
        # A canceled job cannot be canceled again: the confirmation page says so and offers no button.
        page.goto(f"{base}/jobs/{running.job_id}/cancel")
        assert page.locator("#confirm").count() == 0 and "cannot be canceled" in page.inner_text("main")


def test_resume_carries_a_stopped_job_on_to_its_end(page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)  # resume reads the key from the dashboard's environment
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(DOCS):
        (docs / f"inv-{i}.txt").write_text(f"Invoice from Vendor {i}. Total {i}.")
    db = str(tmp_path / "f.db")
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002, api_key=FAKE_KEY) as srv:
        with Store(db) as store:
            job = api.Job.open(options(docs, srv.base_url), store=store)
            store.set_job_state(job.job_id, JobState.RUNNING)
            store.set_job_state(job.job_id, JobState.STOPPED)  # as an error that could not heal leaves it
        with serving(db, poll_ms=200, poll_interval=0.05) as base:
            page.goto(f"{base}/jobs/{job.job_id}")
            assert page.locator('[data-live="state"]').first.inner_text() == "stopped"
            page.get_by_role("link", name="Resume job…").click()
            page.locator("#confirm").click()
            page.wait_for_function(_text_is('[data-live="state"]', "completed"), timeout=90_000)
            page.wait_for_function(_text_is("#n-succeeded", str(DOCS)), timeout=60_000)
