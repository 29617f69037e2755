"""What each adapter guarantees before any HTTP: keys kept out of sight, one request builder, batch refusals,
discovery by entry point. (The same adapters against a live `freight serve` are in test_contract.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from freight.domain import FreightError, Message, Request
from freight.providers import UnknownProvider, get_provider, provider_names
from freight.providers.anthropic import AnthropicProvider
from freight.providers.openai import OpenAIProvider
from freight.providers.protocol import RequestRefused

SECRET = "sk-test-9f8e7d6c5b4a"
# Nothing listens here: an adapter that tried HTTP would fail with a connection error, not the refusal under test.
DEAD = "http://127.0.0.1:9"

ADAPTERS: dict[str, tuple[type[AnthropicProvider] | type[OpenAIProvider], str]] = {
    "anthropic": (AnthropicProvider, "ANTHROPIC_API_KEY"),
    "openai": (OpenAIProvider, "OPENAI_API_KEY"),
}


def plain(custom_id: str = "c1", **kw: Any) -> Request:
    return Request(custom_id=custom_id, model="m", max_tokens=64, messages=[Message(role="user", content="hi")], **kw)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_repr_and_str_never_show_the_key(name: str) -> None:
    cls, _ = ADAPTERS[name]
    provider = cls(base_url=DEAD, api_key=SECRET)
    assert SECRET not in repr(provider) and SECRET not in str(provider)
    assert DEAD in repr(provider)
    assert not any(SECRET in repr(v) for v in vars(provider).values() if not k_is_client(v))


def k_is_client(value: object) -> bool:
    # The SDK client must hold the key to send it; it is private (`_client`) and never rendered by freight.
    return type(value).__module__.split(".")[0] in ("anthropic", "openai")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_key_comes_from_the_environment(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls, var = ADAPTERS[name]
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(FreightError, match=var):
        cls(base_url=DEAD)
    monkeypatch.setenv(var, SECRET)
    provider = cls(base_url=DEAD)
    assert SECRET not in repr(provider)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_batch_path_refuses_tool_calling_and_says_to_run_synchronously(name: str) -> None:
    cls, _ = ADAPTERS[name]
    provider = cls(base_url=DEAD, api_key=SECRET)
    tool = {"name": "lookup", "description": "d", "input_schema": {"type": "object"}}
    with_tools = plain("uses-tools", tools=[tool])
    with pytest.raises(RequestRefused) as info:
        provider.submit_batch([plain("ok-1"), with_tools])
    assert info.value.custom_id == "uses-tools"
    assert "synchronously" in str(info.value) and "tools" in str(info.value)

    turn = Request(
        custom_id="tool-turn",
        model="m",
        max_tokens=64,
        messages=[
            Message(role="user", content="weather?"),
            Message(role="assistant", content=[{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]),
            Message(role="user", content=[{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]),
        ],
    )
    with pytest.raises(RequestRefused, match="tool-turn.*synchronously"):
        provider.submit_batch([turn])


def test_openai_refuses_two_models_in_one_batch() -> None:
    provider = OpenAIProvider(base_url=DEAD, api_key=SECRET)
    other = Request(custom_id="c2", model="other", max_tokens=8, messages=[Message(role="user", content="x")])
    with pytest.raises(RequestRefused, match="c2.*one model per batch"):
        provider.submit_batch([plain("c1"), other])


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_batch_with_a_duplicate_custom_id_is_refused(name: str) -> None:
    cls, _ = ADAPTERS[name]
    with pytest.raises(RequestRefused, match="twice"):
        cls(base_url=DEAD, api_key=SECRET).submit_batch([plain("same"), plain("same")])


def test_anthropic_asks_for_json_with_the_sdks_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    params = AnthropicProvider(base_url=DEAD, api_key=SECRET).params(plain(output_schema=schema, system="s"))
    assert params["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert params["system"] == "s"


def test_openai_asks_for_json_with_response_format_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = OpenAIProvider(base_url=DEAD, api_key=SECRET).body(plain(output_schema=schema, system="be brief"))
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["max_completion_tokens"] == 64


def test_openai_translates_anthropic_shaped_tool_turns_for_the_sync_path() -> None:
    req = Request(
        custom_id="t",
        model="gpt-4o",
        max_tokens=64,
        tools=[{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}],
        messages=[
            Message(role="user", content="weather?"),
            Message(role="assistant", content=[{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": 1}}]),
            Message(role="user", content=[{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]),
        ],
    )
    body = OpenAIProvider(base_url=DEAD, api_key=SECRET).body(req)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}}}
    ]
    assert body["messages"][1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q": 1}'}
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}


def test_providers_are_discovered_through_entry_points() -> None:
    assert {"anthropic", "openai"} <= set(provider_names())
    provider = get_provider("anthropic", base_url=DEAD, api_key=SECRET)
    assert isinstance(provider, AnthropicProvider)
    assert isinstance(get_provider("openai", base_url=DEAD + "/v1", api_key=SECRET), OpenAIProvider)


def test_an_unknown_provider_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProvider) as info:
        get_provider("antropic", api_key=SECRET)
    assert "'antropic'" in str(info.value)
    assert "anthropic" in str(info.value) and "openai" in str(info.value)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_limits_describe_the_provider(name: str) -> None:
    cls, _ = ADAPTERS[name]
    limits = cls.limits
    assert limits.max_requests_per_batch == {"anthropic": 100_000, "openai": 50_000}[name]
    assert limits.max_bytes_per_batch <= {"anthropic": 256, "openai": 200}[name] * 1024 * 1024
    assert limits.batch_supports_tools is False
    assert limits.window_hours == 24
    assert limits.context_for("some-new-model") == limits.default_context_window
    assert limits.one_model_per_batch is (name == "openai")


def test_anthropic_sdk_has_no_temperature_so_the_adapter_does_not_send_it() -> None:
    """The spec (and the domain) know `temperature`; anthropic SDK 2.10's Messages API does not. The SDK wins."""
    import inspect

    import anthropic

    assert "temperature" not in inspect.signature(anthropic.resources.messages.Messages.create).parameters
    params = AnthropicProvider(base_url=DEAD, api_key=SECRET).params(plain(temperature=0.0))
    assert "temperature" not in params
    body = OpenAIProvider(base_url=DEAD, api_key=SECRET).body(plain(temperature=0.0))
    assert body["temperature"] == 0.0
