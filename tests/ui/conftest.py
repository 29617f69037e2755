"""A real job run against freight serve (planted failures: a chunk-and-merge, re-asks, a permanent error) with a
recognizable fake key, the dashboard serving its store on loopback, and headless Chromium from Debian's packages."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from freight.providers import get_provider
from freight.runner.job import RunOptions, open_job
from freight.runner.loop import Runner
from freight.server.testing import LocalServer, free_port
from freight.store import Store
from freight.ui import create_app
from runner.conftest import SCHEMA, write_corpus

CHROMIUM = Path("/usr/bin/chromium")
FAKE_KEY = "fake-anthropic-key-for-the-ui-tests-7f3a9c0d2b"  # searched for on every page: it must never show
MODEL = "scripted-ctx-1200"  # a 1,200-token window: the long document is chunked


@dataclass
class RanJob:
    db: str
    job_id: str
    server: LocalServer | None = None


def options(corpus: Path, base_url: str) -> RunOptions:
    return RunOptions(
        input=str(corpus), provider="anthropic", model=MODEL, prompt="Extract the fields.\n\n{document}",
        schema=SCHEMA, max_tokens=120, max_retries=3, base_url=base_url,
    )  # fmt: skip


def run_job(store: Store, server: LocalServer, corpus: Path, batch_size: int = 8) -> Runner:
    opts = options(corpus, server.base_url)
    job, _ = open_job(store, opts)
    adapter = get_provider("anthropic", base_url=server.base_url, api_key=server.api_key)
    return Runner(store, adapter, job.job_id, opts, poll_interval=0.05, sleep=lambda s: time.sleep(0.05),
                  batch_size=batch_size)  # fmt: skip


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RanJob]:
    """The planted corpus run to its end, the fake key in the environment throughout (as a user's shell has it)."""
    root = tmp_path_factory.mktemp("ui-job")
    corpus = write_corpus(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        with (
            LocalServer(root / "serve.db", time_scale=0.0002, api_key=FAKE_KEY) as srv,
            Store(str(root / "f.db")) as store,
        ):
            runner = run_job(store, srv, corpus)
            runner.run()
            yield RanJob(str(root / "f.db"), runner.job_id)


@contextlib.contextmanager
def serving(db: str, **kwargs: Any) -> Iterator[str]:
    """`create_app(db)` under uvicorn on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(db, **kwargs), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def ui_url(finished_job: RanJob) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        with serving(finished_job.db) as url:
            yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: `apt-get install chromium` (.ci/run installs it) to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(30_000)
    yield p
    context.close()
