"""freight serve's other OpenAI endpoints — embeddings, Responses, completions, moderations — driven by the official
`openai` SDK over loopback, in batches and synchronously, in the OpenAI and Azure dialects."""

from __future__ import annotations

import json
import math
from typing import Any

import openai
import pytest
from openai.types import Batch, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.responses import Response
from serve_helpers import jsonl, upload, wait_openai

from freight.server.testing import LocalServer


def line(custom_id: str, url: str, **body: Any) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def run(client: openai.OpenAI, endpoint: str, lines: list[str]) -> Batch:
    batch = client.batches.create(
        input_file_id=upload(client, lines),
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    return wait_openai(client, batch.id)


def output(client: openai.OpenAI, batch: Batch) -> dict[str, dict[str, Any]]:
    assert batch.output_file_id is not None
    return {ln["custom_id"]: ln for ln in jsonl(client.files.content(batch.output_file_id).text)}


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_embeddings_batch_gives_deterministic_unit_vectors_of_the_asked_size(oai: openai.OpenAI) -> None:
    url, model = "/v1/embeddings", "text-embedding-3-small"
    lines = [
        line("a", url, model=model, input="the cat sat", dimensions=64),
        line("b", url, model=model, input=["the cat sat", "a dog ran"], dimensions=64),
        line("c", url, model=model, input="full size"),
    ]
    done = run(oai, url, lines)
    assert done.status == "completed" and done.request_counts and done.request_counts.completed == 3
    out = output(oai, done)
    # Each body is what the SDK parses as an embeddings reply.
    a = CreateEmbeddingResponse.model_validate(out["a"]["response"]["body"])
    b = CreateEmbeddingResponse.model_validate(out["b"]["response"]["body"])
    c = CreateEmbeddingResponse.model_validate(out["c"]["response"]["body"])
    assert len(a.data[0].embedding) == 64 and len(c.data[0].embedding) == 1536  # the model's own size by default
    assert [d.index for d in b.data] == [0, 1]
    assert b.data[0].embedding == a.data[0].embedding, "the same text must give the same vector"
    assert abs(norm(a.data[0].embedding) - 1.0) < 1e-5
    cosine = sum(x * y for x, y in zip(b.data[0].embedding, b.data[1].embedding, strict=True))
    assert abs(cosine) < 0.5, "different texts should not give near-identical vectors"
    assert a.usage.prompt_tokens == 3 and a.model == model  # ceil(11 chars / 4)


def test_embedding_over_the_input_limit_is_an_error_line(oai: openai.OpenAI) -> None:
    url = "/v1/embeddings"
    lines = [
        line("ok", url, model="text-embedding-3-small", input="short"),
        line("long", url, model="text-embedding-3-small", input="x" * 40_000),
    ]
    done = run(oai, url, lines)
    assert done.request_counts and (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    assert done.error_file_id is not None
    err = jsonl(oai.files.content(done.error_file_id).text)[0]
    assert err["custom_id"] == "long" and err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert "8192" in err["response"]["body"]["error"]["message"]


def test_a_chat_line_in_an_embeddings_batch_fails_it_naming_the_line(oai: openai.OpenAI) -> None:
    lines = [
        line("a", "/v1/embeddings", model="text-embedding-3-small", input="x"),
        line("b", "/v1/chat/completions", model="text-embedding-3-small", messages=[{"role": "user", "content": "x"}]),
    ]
    failed = run(oai, "/v1/embeddings", lines)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert [(e.code, e.line) for e in failed.errors.data] == [("invalid_url", 2)]
    assert "/v1/embeddings" in (failed.errors.data[0].message or "")


def test_responses_batch_with_schema_truncation_and_usage(oai: openai.OpenAI) -> None:
    url = "/v1/responses"
    schema = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    fmt = {"format": {"type": "json_schema", "name": "invoice", "schema": schema}}
    lines = [
        line("plain", url, model="gpt-4.1-mini", input="hello there", instructions="be brief"),
        line("json", url, model="gpt-4.1-mini", input="invoice\ntotal: 12.5", text=fmt),
        line("cut", url, model="gpt-4.1-mini", input="a long question " * 20, max_output_tokens=16),
    ]
    out = output(oai, run(oai, url, lines))
    plain = Response.model_validate(out["plain"]["response"]["body"])
    assert plain.status == "completed" and plain.output_text == "echo: hello there"
    assert plain.instructions == "be brief" and plain.id.startswith("resp_")
    assert plain.usage and plain.usage.output_tokens == 5 and plain.usage.input_tokens == 5  # "be brief\nhello there"
    parsed = json.loads(Response.model_validate(out["json"]["response"]["body"]).output_text)
    assert parsed == {"total": 12.5}
    cut = Response.model_validate(out["cut"]["response"]["body"])
    assert cut.status == "incomplete"
    assert cut.incomplete_details and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage and cut.usage.output_tokens == 16


def test_completions_and_moderations_batches(oai: openai.OpenAI) -> None:
    comp = output(
        oai,
        run(
            oai,
            "/v1/completions",
            [line("c", "/v1/completions", model="gpt-3.5-turbo-instruct", prompt="say hi", max_tokens=50)],
        ),
    )
    body = comp["c"]["response"]["body"]
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "echo: say hi"
    mods = output(
        oai,
        run(oai, "/v1/moderations", [line("m", "/v1/moderations", model="omni-moderation-latest", input=["a", "b"])]),
    )
    parsed = ModerationCreateResponse.model_validate(mods["m"]["response"]["body"])
    assert len(parsed.results) == 2 and not any(r.flagged for r in parsed.results)


def test_sync_endpoints_through_the_sdk(oai: openai.OpenAI) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    emb = oai.embeddings.create(model="text-embedding-3-large", input=["one", "two"], dimensions=8)
    assert [len(d.embedding) for d in emb.data] == [8, 8]
    floats = oai.embeddings.create(model="text-embedding-3-large", input="one", dimensions=8, encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(emb.data[0].embedding)
    resp = oai.responses.create(model="gpt-4.1-mini", input="ping", max_output_tokens=100)
    assert resp.output_text == "echo: ping" and resp.status == "completed"
    comp = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="ping", max_tokens=2)
    assert comp.choices[0].finish_reason == "length" and comp.choices[0].text == "echo: pi"
    assert oai.moderations.create(input="hello").results[0].flagged is False
    with pytest.raises(openai.BadRequestError, match="input"):
        oai.responses.create(model="gpt-4.1-mini", input=[])


def test_azure_embeddings_batch_and_deployment_path(server: LocalServer) -> None:
    az = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint, api_key=server.api_key, api_version="2024-10-21", max_retries=0
    )
    done = run(az, "/embeddings", [line("a", "/embeddings", model="my-embedder", input="hello", dimensions=16)])
    vec = output(az, done)["a"]["response"]["body"]["data"][0]["embedding"]
    assert len(vec) == 16
    # The deployment in the path is the model: the same vector as the batch gave for the same deployment name.
    sync = az.embeddings.create(model="my-embedder", input="hello", dimensions=16, encoding_format="float")
    assert sync.data[0].embedding == pytest.approx(vec)
    resp = az.responses.create(model="my-deployment", input="ping")
    assert resp.output_text == "echo: ping" and resp.model == "my-deployment"
