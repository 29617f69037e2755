"""Where a service has no counting endpoint, the count is an estimate calibrated on the job's own usage, and says so."""

from __future__ import annotations

from pathlib import Path

import freight
from freight.domain import Message, Request
from freight.providers import get_provider
from freight.runner.tokens import TokenCounter
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import settings, write_corpus


def test_a_service_without_a_counter_gets_a_labelled_estimate(tmp_path: Path, server: LocalServer) -> None:
    docs = write_corpus(tmp_path, 12)
    # An OpenAI-compatible endpoint with no /responses/input_tokens (nothing is served under this prefix): a 404.
    no_counter = f"{server.base_url}/self-hosted/v1"
    forecast = freight.estimate(
        docs,
        store=Store(str(tmp_path / "f.db")),
        **settings(server, docs, provider="openai", model="gpt-4o-mini", base_url=no_counter),  # fmt: skip
    )
    assert "counter was refused" in forecast["counter"] and "4 characters a token" in forecast["counter"]
    assert server.records() == [] and server.counts() == []

    # Calibrated on the job's own answers once there are some: here a run on the scripted engine.
    store = Store(str(tmp_path / "f.db"))
    report = freight.run(docs, store=store, sample=False, poll_interval=0.05, **settings(server, docs))
    counter = TokenCounter(get_provider("openai", base_url=no_counter, api_key=server.api_key), store, report.job_id)
    text = "vendor: Someone\ntotal: 3\n" + "A line of the invoice, with its words. " * 30
    request = Request(custom_id="x", model="gpt-4o-mini", messages=[Message(role="user", content=text)], max_tokens=9)
    counted = counter.count(request)
    assert counted.estimated and "this job's 12 answers" in counted.how
    exact = get_provider("anthropic", base_url=server.base_url, api_key=server.api_key).count_tokens(request)
    assert abs(counted.input_tokens - exact.input_tokens) <= 0.02 * exact.input_tokens
