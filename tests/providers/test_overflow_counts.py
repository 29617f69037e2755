"""A context overflow carries the provider's own counts on the outcome: each adapter reads its provider's wording,
so the runner never parses error text. Over real HTTP against freight serve, sync and batch, for three dialects."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from freight.domain import Errored, ErrorKind, Message, Request
from freight.providers import get_provider
from freight.server.testing import LocalServer

MODEL = "scripted-ctx-100"  # the scripted engine's window for this model: 100 tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer(tmp_path_factory.mktemp("serve") / "s.db", time_scale=0.0002) as srv:
        yield srv


def _long(cid: str) -> Request:
    return Request(custom_id=cid, model=MODEL, max_tokens=10, messages=[Message(role="user", content="word " * 200)])


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
def test_overflow_counts_sync_and_batch(server: LocalServer, provider: str) -> None:
    adapter = get_provider(provider, base_url=server.url_for(provider), api_key=server.api_key)
    sync = adapter.send(_long("s1"))
    assert isinstance(sync, Errored) and sync.kind is ErrorKind.CONTEXT_OVERFLOW
    assert sync.context_window == 100 and sync.prompt_tokens is not None and sync.prompt_tokens > 100

    batch = adapter.submit_batch([_long("b1")])
    deadline = time.monotonic() + 120
    while not adapter.get_batch(batch.provider_batch_id).state.terminal:
        assert time.monotonic() < deadline, "the batch never ended"
        time.sleep(0.05)
    (result,) = list(adapter.iter_results(batch.provider_batch_id))
    outcome = result.outcome
    assert isinstance(outcome, Errored) and outcome.kind is ErrorKind.CONTEXT_OVERFLOW
    assert (outcome.prompt_tokens, outcome.context_window) == (sync.prompt_tokens, 100)
