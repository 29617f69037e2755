"""The Anthropic dialect, driven by the official `anthropic` SDK over a real loopback port."""

from __future__ import annotations

import time

import anthropic
import pytest
from serve_helpers import a_request, wait_anthropic

from freight.server.testing import LocalServer


def test_batch_happy_path_results_match_each_request(claude: anthropic.Anthropic, server: LocalServer) -> None:
    batch = claude.messages.batches.create(requests=[a_request(f"doc-{i}", f"text {i}") for i in range(12)])
    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "in_progress"
    assert batch.results_url is None
    assert batch.request_counts.processing == 12
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(24 * 3600 * 0.0005, abs=0.01)

    ended = wait_anthropic(claude, batch.id)
    assert ended.request_counts.succeeded == 12 and ended.request_counts.processing == 0
    assert ended.ended_at is not None
    assert ended.results_url == f"{server.base_url}/v1/messages/batches/{batch.id}/results"

    results = list(claude.messages.batches.results(batch.id))
    by_id = {r.custom_id: r for r in results}
    assert set(by_id) == {f"doc-{i}" for i in range(12)}
    for i in range(12):
        result = by_id[f"doc-{i}"].result
        assert result.type == "succeeded"
        assert result.message.content[0].text == f"echo: text {i}"
        assert result.message.stop_reason == "end_turn"
        assert result.message.usage.input_tokens == 2  # ceil(len("text N") / 4)
    order = [r.custom_id for r in results]
    assert order != [f"doc-{i}" for i in range(12)], "results must not come back in input order"


def test_results_have_no_blank_lines_and_are_jsonl(claude: anthropic.Anthropic, server: LocalServer) -> None:
    import httpx

    batch = claude.messages.batches.create(requests=[a_request(f"r{i}", "x") for i in range(5)])
    wait_anthropic(claude, batch.id)
    raw = httpx.get(f"{server.base_url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": "test-key"})
    assert raw.status_code == 200
    lines = raw.text.split("\n")
    assert lines[-1] == "" and all(lines[:-1]), "one JSON object per line, newline-terminated, no blank line"
    assert len(lines) - 1 == 5


def test_results_before_end_are_refused_by_the_sdk(slow_claude: anthropic.Anthropic) -> None:
    batch = slow_claude.messages.batches.create(requests=[a_request("only", "x")])
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        slow_claude.messages.batches.results(batch.id)


def test_list_paginates_newest_first_with_cursors(claude: anthropic.Anthropic) -> None:
    ids = [claude.messages.batches.create(requests=[a_request("a", "x")]).id for _ in range(5)]
    newest_first = list(reversed(ids))

    page = claude.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True and page.first_id == newest_first[0] and page.last_id == newest_first[1]
    assert [b.id for b in claude.messages.batches.list(limit=2)] == newest_first  # auto-pagination walks all

    after = claude.messages.batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in after.data] == newest_first[2:4] and after.has_more is True
    before = claude.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in before.data] == newest_first[1:3] and before.has_more is True
    last = claude.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:] and last.has_more is False


def test_cancel_moves_through_canceling_and_unprocessed_requests_are_canceled(tmp_path: object) -> None:
    from pathlib import Path

    # A slower clock so the batch is still in progress when the cancel arrives.
    with LocalServer(Path(str(tmp_path)) / "s.db", time_scale=0.01, workers=1) as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=0)
        batch = client.messages.batches.create(requests=[a_request(f"r{i}", "x") for i in range(50)])
        canceling = client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        ended = wait_anthropic(client, batch.id)
        counts = ended.request_counts
        assert counts.canceled > 0
        assert counts.succeeded + counts.canceled == 50
        types = {r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)}
        assert len(types) == 50 and set(types.values()) <= {"succeeded", "canceled"}
        assert sum(t == "canceled" for t in types.values()) == counts.canceled


def test_delete_only_once_ended(slow_claude: anthropic.Anthropic) -> None:
    claude = slow_claude
    batch = claude.messages.batches.create(requests=[a_request("a", "x")])
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.batches.delete(batch.id)
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    wait_anthropic(claude, batch.id)
    deleted = claude.messages.batches.delete(batch.id)
    assert deleted.type == "message_batch_deleted" and deleted.id == batch.id
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve(batch.id)


def test_sync_message(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello there"
    assert msg.id.startswith("msg_") and msg.model == "claude-haiku-4-5"
    assert msg.usage.input_tokens == 5  # ceil(len("be brief\nhello there") / 4) = ceil(20 / 4)


def test_records_show_every_received_request(claude: anthropic.Anthropic, server: LocalServer) -> None:
    claude.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    batch = claude.messages.batches.create(requests=[a_request("one", "x"), a_request("two", "y")])
    records = server.records()
    assert [(r["dialect"], r["batch_id"], r["custom_id"]) for r in records] == [
        ("anthropic", None, None),
        ("anthropic", batch.id, "one"),
        ("anthropic", batch.id, "two"),
    ]
    assert all(isinstance(r["received_at"], float) for r in records)


def test_wrong_or_missing_key_is_authentication_error(server: LocalServer) -> None:
    bad = anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.batches.list()
    assert err.value.status_code == 401
    assert err.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "wrong" not in str(err.value.body)


def test_x_api_key_header_is_accepted_as_well_as_bearer(server: LocalServer) -> None:
    import httpx

    for headers in ({"x-api-key": "test-key"}, {"authorization": "Bearer test-key"}):
        r = httpx.get(f"{server.base_url}/v1/messages/batches", headers={**headers, "anthropic-version": "2099-01-01"})
        assert r.status_code == 200, headers
        assert r.headers["request-id"].startswith("req_")


def test_error_envelopes(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        claude.messages.batches.retrieve("msgbatch_nope")
    assert nf.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {"type": "not_found_error", "message": "No message batch with id 'msgbatch_nope'."},
        "request_id": None,
    }
    with pytest.raises(anthropic.BadRequestError, match="used more than once"):
        claude.messages.batches.create(requests=[a_request("same", "x"), a_request("same", "y")])
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        claude.messages.batches.create(requests=[a_request("has space", "x")])
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        claude.messages.create(model="m", messages=[{"role": "user", "content": "x"}], extra_body={}, max_tokens=-1)


def test_invalid_params_inside_a_batch_become_errored_results(claude: anthropic.Anthropic) -> None:
    bad = {"custom_id": "bad", "params": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}
    batch = claude.messages.batches.create(requests=[bad, a_request("good", "x")])  # type: ignore[list-item]
    ended = wait_anthropic(claude, batch.id)
    assert ended.request_counts.errored == 1 and ended.request_counts.succeeded == 1
    result = {r.custom_id: r.result for r in claude.messages.batches.results(batch.id)}["bad"]
    assert result.type == "errored"
    assert result.error.error.type == "invalid_request_error"
    assert "max_tokens" in result.error.error.message


def test_too_many_requests_is_refused(claude: anthropic.Anthropic) -> None:
    start = time.monotonic()
    with pytest.raises(anthropic.BadRequestError, match="100000"):
        claude.messages.batches.create(requests=[a_request(f"r{i}", "x") for i in range(100_001)])
    assert time.monotonic() - start < 60
