"""Token counting behind the provider protocol: each adapter asks its provider's own counter through the official SDK,
`freight serve` answers with the engine's tokenizer, and records the call apart from inference."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from freight.domain import Message, Request, Succeeded
from freight.providers import get_provider
from freight.server.testing import LocalServer

SCHEMA = {"type": "object", "properties": {"vendor": {"type": "string"}}, "required": ["vendor"]}
MODELS = {
    "anthropic": "claude-haiku-4-5",
    "openai": "gpt-4o-mini",
    "azure": "gpt-4o-mini",
    "gemini": "gemini-2.5-flash",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer(tmp_path_factory.mktemp("count") / "serve.db", engine="scripted", time_scale=0.0005) as srv:
        yield srv


def _request(model: str, text: str) -> Request:
    return Request(
        custom_id="c1",
        model=model,
        messages=[Message(role="user", content=text)],
        max_tokens=64,
        system="You extract invoice fields.",
        output_schema=SCHEMA,
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_count_is_what_inference_then_bills_and_is_recorded_apart(name: str, server: LocalServer) -> None:
    provider = get_provider(name, base_url=server.url_for(name), api_key=server.api_key)
    request = _request(MODELS[name], f"vendor: ACME {name}\n" + "Line of an invoice. " * 40)
    before_records, before_counts = len(server.records()), len(server.counts())

    counted = provider.count_tokens(request)

    assert not counted.estimated and name in counted.how
    assert len(server.records()) == before_records  # counting is not inference
    new = server.counts()[before_counts:]
    assert [(c["dialect"], c["model"], c["input_tokens"]) for c in new] == [(name, MODELS[name], counted.input_tokens)]
    answered = provider.send(request)
    assert isinstance(answered, Succeeded)
    assert answered.usage.input_tokens == counted.input_tokens


def test_a_refused_key_is_a_provider_error(server: LocalServer) -> None:
    provider = get_provider("anthropic", base_url=server.base_url, api_key="wrong-key")
    with pytest.raises(Exception, match="401|authentication") as info:
        provider.count_tokens(_request("claude-haiku-4-5", "x"))
    assert type(info.value).__name__ == "ProviderError"
