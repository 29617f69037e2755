"""The OpenAI dialect, driven by the official `openai` SDK over a real loopback port."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from serve_helpers import jsonl, o_line, upload, wait_openai

from freight.server.testing import LocalServer


def test_file_upload_retrieve_download_delete(oai: openai.OpenAI) -> None:
    content = (o_line("a", "hello") + "\n").encode()
    created = oai.files.create(file=("mine.jsonl", content), purpose="batch")
    assert created.id.startswith("file-") and created.bytes == len(content) and created.filename == "mine.jsonl"
    assert oai.files.retrieve(created.id).purpose == "batch"
    assert oai.files.content(created.id).content == content
    deleted = oai.files.delete(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(created.id)


def test_batch_happy_path_output_file_lines(oai: openai.OpenAI) -> None:
    file_id = upload(oai, [o_line(f"req-{i}", f"question {i}") for i in range(10)])
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"job": "t"}
    )
    assert batch.status == "validating" and batch.id.startswith("batch_")
    done = wait_openai(oai, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None and (done.request_counts.total, done.request_counts.completed) == (10, 10)
    assert done.metadata == {"job": "t"} and done.model == "gpt-4o-mini"
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.error_file_id is None  # no errors, no error file
    assert done.output_file_id is not None

    lines = jsonl(oai.files.content(done.output_file_id).text)
    assert [line["custom_id"] for line in lines] != [f"req-{i}" for i in range(10)], "not in input order"
    by_id = {line["custom_id"]: line for line in lines}
    assert set(by_id) == {f"req-{i}" for i in range(10)}
    line = by_id["req-3"]
    assert line["error"] is None and line["id"].startswith("batch_req_")
    assert line["response"]["status_code"] == 200
    body = line["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "echo: question 3"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert oai.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_malformed_line_and_duplicate_custom_id_fail_the_batch(oai: openai.OpenAI) -> None:
    lines = [o_line("a", "x"), "{not json", o_line("a", "y"), o_line("b", "z", model="gpt-4o")]
    batch = oai.batches.create(
        input_file_id=upload(oai, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_openai(oai, batch.id)
    assert failed.status == "failed" and failed.failed_at is not None
    assert failed.errors is not None and failed.errors.data is not None
    errors = [(e.code, e.line) for e in failed.errors.data]
    assert errors == [("invalid_json_line", 2), ("duplicate_custom_id", 3), ("mismatched_model", 4)]
    assert failed.output_file_id is None


def test_wrong_url_in_a_line_fails_the_batch(oai: openai.OpenAI) -> None:
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}})
    batch = oai.batches.create(
        input_file_id=upload(oai, [line]), endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_openai(oai, batch.id)
    assert failed.status == "failed"
    assert failed.errors and failed.errors.data and failed.errors.data[0].code == "invalid_url"


def test_request_errors_go_to_the_error_file(oai: openai.OpenAI) -> None:
    big = "word " * 100  # 500 characters: 125 tokens, over the 100-token window of scripted-ctx-100
    lines = [o_line("ok", "fine", model="scripted-ctx-100"), o_line("long", big, model="scripted-ctx-100")]
    batch = oai.batches.create(
        input_file_id=upload(oai, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_openai(oai, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    assert done.output_file_id and done.error_file_id
    (err,) = jsonl(oai.files.content(done.error_file_id).text)
    assert err["custom_id"] == "long" and err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 100 tokens" in err["response"]["body"]["error"]["message"]


def test_list_paginates_with_after(oai: openai.OpenAI) -> None:
    file_id = upload(oai, [o_line("a", "x")])
    ids = [
        oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(5)
    ]
    newest_first = list(reversed(ids))
    page = oai.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more is True
    assert [b.id for b in oai.batches.list(limit=2)] == newest_first
    tail = oai.batches.list(limit=2, after=newest_first[3])
    assert [b.id for b in tail.data] == newest_first[4:] and tail.has_more is False


def test_cancel_goes_through_cancelling_to_cancelled(tmp_path: Path) -> None:
    with LocalServer(tmp_path / "s.db", time_scale=0.01, workers=1) as srv:
        client = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=0)
        file_id = upload(client, [o_line(f"r{i}", "x") for i in range(50)])
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        done = wait_openai(client, batch.id)
        assert done.status == "cancelled" and done.cancelled_at is not None
        with pytest.raises(openai.BadRequestError, match="Cannot cancel"):
            client.batches.cancel(batch.id)


def test_cancel_after_some_work_reports_cancelled_requests_in_the_error_file(tmp_path: Path) -> None:
    with LocalServer(tmp_path / "s.db", time_scale=0.01, workers=1) as srv:
        client = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=0)
        file_id = upload(client, [o_line(f"r{i}", "x") for i in range(40)])
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        for _ in range(500):
            if client.batches.retrieve(batch.id).status == "in_progress":
                break
        client.batches.cancel(batch.id)
        done = wait_openai(client, batch.id)
        assert done.error_file_id is not None
        errors = jsonl(client.files.content(done.error_file_id).text)
        completed = jsonl(client.files.content(done.output_file_id).text) if done.output_file_id else []
        assert len(errors) + len(completed) == 40
        assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}


def test_sync_chat_completion(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "ping"}]
    )
    assert reply.choices[0].message.content == "echo: ping"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 2  # ceil(len("sys\nping") / 4)


def test_error_envelopes(oai: openai.OpenAI, server: LocalServer) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        oai.batches.retrieve("batch_nope")
    assert nf.value.code is None and nf.value.type == "invalid_request_error"
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        oai.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError) as ctx:
        oai.chat.completions.create(model="scripted-ctx-10", messages=[{"role": "user", "content": "x" * 100}])
    assert ctx.value.code == "context_length_exceeded" and ctx.value.status_code == 400
    bad = openai.OpenAI(base_url=server.openai_base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.batches.list()
    assert auth.value.code == "invalid_api_key"


def test_upload_with_wrong_purpose_cannot_feed_a_batch(oai: openai.OpenAI) -> None:
    f = oai.files.create(file=("x.jsonl", b"{}\n"), purpose="user_data")
    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
