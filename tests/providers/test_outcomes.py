"""Provider replies → domain outcomes: stop reasons, usage (cache tokens included), refusals, JSON, results lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from freight.domain import Errored, ErrorKind, StopReason, Succeeded, Usage
from freight.providers import anthropic as a
from freight.providers import openai as o
from freight.providers.common import correlate, decode_lines


def a_message(text: str = "hi", stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "type": "message",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def o_completion(
    text: str | None = "hi", finish: str = "stop", refusal: str | None = None, cached: int = 0
) -> dict[str, Any]:
    message = {"role": "assistant", "content": text, "refusal": refusal}
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": cached}},
    }


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("end_turn", StopReason.END),
        ("max_tokens", StopReason.MAX_TOKENS),
        ("model_context_window_exceeded", StopReason.MAX_TOKENS),
        ("stop_sequence", StopReason.STOP_SEQUENCE),
        ("tool_use", StopReason.TOOL_USE),
        ("pause_turn", StopReason.END),
    ],
)
def test_anthropic_stop_reasons(stop: str, expected: StopReason) -> None:
    out = a.outcome_of_message(a_message(stop=stop), wants_json=False)
    assert isinstance(out, Succeeded) and out.stop_reason is expected


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("stop", StopReason.END), ("length", StopReason.MAX_TOKENS), ("tool_calls", StopReason.TOOL_USE)],
)
def test_openai_finish_reasons(finish: str, expected: StopReason) -> None:
    out = o.outcome_of_completion(o_completion(finish=finish), wants_json=False)
    assert isinstance(out, Succeeded) and out.stop_reason is expected


def test_anthropic_usage_carries_cache_tokens() -> None:
    out = a.outcome_of_message(a_message(cache_creation_input_tokens=300, cache_read_input_tokens=1200), False)
    assert out.usage == Usage(input_tokens=10, output_tokens=5, cache_write_tokens=300, cache_read_tokens=1200)


def test_openai_usage_separates_cached_from_uncached_input() -> None:
    out = o.outcome_of_completion(o_completion(cached=60), wants_json=False)
    assert out.usage == Usage(input_tokens=40, output_tokens=7, cache_read_tokens=60)


def test_refusals_and_filtered_replies_are_errored_not_empty_successes() -> None:
    refused = a.outcome_of_message(a_message("I can't help with that.", stop="refusal"), False)
    assert isinstance(refused, Errored) and refused.raw_type == "refusal" and refused.usage.output_tokens == 5
    o_refused = o.outcome_of_completion(o_completion(None, refusal="I can't help with that."), False)
    assert isinstance(o_refused, Errored) and o_refused.message == "I can't help with that."
    filtered = o.outcome_of_completion(o_completion("", finish="content_filter"), False)
    assert isinstance(filtered, Errored) and filtered.raw_type == "content_filter"
    assert filtered.kind is ErrorKind.INVALID_REQUEST


@pytest.mark.parametrize("text", ['{"a": 1}', '```json\n{"a": 1}\n```', ' {"a": 1} '])
def test_json_replies_are_parsed_when_asked_for(text: str) -> None:
    assert a.outcome_of_message(a_message(text), wants_json=True).parsed == {"a": 1}  # type: ignore[union-attr]
    assert o.outcome_of_completion(o_completion(text), wants_json=True).parsed == {"a": 1}  # type: ignore[union-attr]
    assert a.outcome_of_message(a_message(text), wants_json=False).parsed is None  # type: ignore[union-attr]


def test_a_broken_results_line_is_reported_for_its_custom_id_unless_a_good_line_arrives() -> None:
    good = '{"custom_id":"ok","result":{"type":"succeeded","message":' + json.dumps(a_message()) + "}}"
    lines = [good, '{"custom_id":"cut","result":{"type":"succ', '{"custom_id":"twice","res', "", "not json at all"]
    good_twice = '{"custom_id":"twice","result":{"type":"expired"}}'
    results = {r.custom_id: r.outcome for r in correlate(decode_lines([*lines, good_twice]), a.outcome_of_result)}
    assert set(results) == {"ok", "cut", "twice"}
    assert isinstance(results["ok"], Succeeded)
    assert results["twice"].status == "expired"  # the good line wins over the broken one
    cut = results["cut"]
    assert isinstance(cut, Errored) and cut.kind is ErrorKind.UNKNOWN and cut.raw_type == "malformed_result"


def test_openai_requests_without_a_results_line_get_an_outcome_from_the_batchs_end() -> None:
    from openai.types import BatchError

    from freight.domain import BatchState, Canceled, Expired
    from freight.providers.openai_wire import missing_outcome

    assert missing_outcome(BatchState.CANCELED, None) == Canceled()
    assert missing_outcome(BatchState.EXPIRED, None) == Expired()
    named = missing_outcome(BatchState.FAILED, BatchError(code="invalid_json_line", message="not JSON", line=3))
    assert isinstance(named, Errored) and named.kind is ErrorKind.INVALID_REQUEST
    assert (named.raw_type, named.message) == ("invalid_json_line", "not JSON")
    innocent = missing_outcome(BatchState.FAILED, None)
    assert isinstance(innocent, Errored) and innocent.kind.retryable and innocent.raw_type == "batch_failed"
