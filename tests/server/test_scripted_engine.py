"""The scripted engine's rule, which tests and users predict replies from (docs/serve.md states it)."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import openai
import pytest
from serve_helpers import a_request, wait_anthropic

from freight.domain import Errored, ErrorKind, Message, Request, StopReason, Succeeded
from freight.server import engines
from freight.server.engines.scripted import ScriptedEngine

INVOICE = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "total": {"type": "number", "minimum": 0},
        "currency": {"enum": ["EUR", "USD"]},
        "paid": {"type": "boolean"},
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "minItems": 2},
        "due": {"type": "string", "format": "date"},
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 3}]},
    },
    "required": ["vendor", "total", "currency", "paid", "lines", "due", "note"],
    "additionalProperties": False,
    "$defs": {"line": {"type": "object", "properties": {"qty": {"type": "integer", "minimum": 1}}}},
}
PROMPT = "Extract the invoice.\nVendor: ACME GmbH\nTotal: 1,234.50\nCurrency: usd\nPaid: yes"


def req(text: str, **kw: object) -> Request:
    return Request(custom_id="c", model=str(kw.pop("model", "m")), messages=[Message(role="user", content=text)],
                   max_tokens=int(kw.pop("max_tokens", 1000)), **kw)  # type: ignore[arg-type]  # fmt: skip


def test_registry_creates_engines_by_name_and_names_the_choices() -> None:
    assert isinstance(engines.create("scripted"), ScriptedEngine)
    with pytest.raises(Exception, match=r"unknown engine .nope.; choose one of: .*scripted"):
        engines.create("nope")


def test_context_windows_per_model() -> None:
    e = ScriptedEngine()
    assert e.context_window("scripted-ctx-2000") == 2000
    assert e.context_window("some-unknown-model") == 8192
    assert e.context_window("claude-scripted") == 200_000
    assert e.context_window("gpt-4o-mini") == 128_000


def test_over_the_window_is_context_overflow_with_the_providers_message() -> None:
    out = ScriptedEngine().complete(req("x" * 8001, model="scripted-ctx-2000"))
    assert isinstance(out, Errored) and out.kind is ErrorKind.CONTEXT_OVERFLOW
    assert out.message == "prompt is too long: 2001 tokens > 2000 maximum"


def test_reply_echoes_the_last_user_message_and_max_tokens_cuts_it() -> None:
    out = ScriptedEngine().complete(req("abcdefghijklmnop", max_tokens=3))
    assert isinstance(out, Succeeded)
    assert out.text == "echo: abcdef"  # 3 tokens = 12 characters of "echo: abcdefghijklmnop"
    assert out.stop_reason is StopReason.MAX_TOKENS and out.usage.output_tokens == 3


def test_stop_sequence_cuts_the_reply() -> None:
    out = ScriptedEngine().complete(req("one. two. three", stop_sequences=["two"]))
    assert isinstance(out, Succeeded) and out.text == "echo: one. " and out.stop_reason is StopReason.STOP_SEQUENCE


def test_json_reply_satisfies_the_schema_and_takes_values_from_the_prompt() -> None:
    out = ScriptedEngine().complete(req(PROMPT, output_schema=INVOICE))
    assert isinstance(out, Succeeded)
    value = json.loads(out.text)
    jsonschema.validate(value, INVOICE)
    assert value["vendor"] == "ACME GmbH" and value["total"] == 1234.5
    assert value["currency"] == "USD" and value["paid"] is True and len(value["lines"]) == 2
    assert out.parsed == value


def test_anthropic_json_via_output_config_in_a_batch(claude: anthropic.Anthropic) -> None:
    params = {"output_config": {"format": {"type": "json_schema", "schema": INVOICE}}}
    batch = claude.messages.batches.create(requests=[a_request("inv", PROMPT, **params)])
    wait_anthropic(claude, batch.id)
    (result,) = list(claude.messages.batches.results(batch.id))
    assert result.result.type == "succeeded"
    jsonschema.validate(json.loads(result.result.message.content[0].text), INVOICE)


def test_anthropic_sync_json_and_max_tokens(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model="claude-scripted",
        max_tokens=5,
        messages=[{"role": "user", "content": PROMPT}],
        output_config={"format": {"type": "json_schema", "schema": INVOICE}},
    )
    assert msg.stop_reason == "max_tokens" and len(msg.content[0].text) == 20  # type: ignore[union-attr]


def test_anthropic_context_overflow_is_its_own_400(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="scripted-ctx-50", max_tokens=5, messages=[{"role": "user", "content": "y" * 400}])
    assert err.value.body["error"] == {  # type: ignore[index]
        "type": "invalid_request_error",
        "message": "prompt is too long: 100 tokens > 50 maximum",
    }


def test_openai_json_schema_response_format_and_length(oai: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "invoice", "schema": INVOICE, "strict": True}}
    reply = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": PROMPT}],
        response_format=fmt,  # type: ignore[arg-type]
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), INVOICE)
    short = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": PROMPT}],
        response_format=fmt,
        max_tokens=4,  # type: ignore[arg-type]
    )
    assert short.choices[0].finish_reason == "length"
