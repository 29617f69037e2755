"""freight serve's Azure OpenAI dialect, driven by `openai.AzureOpenAI` (and the plain client on /openai/v1)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from freight.server.testing import LocalServer

VERSION = "2024-10-21"


@pytest.fixture
def az(server: LocalServer) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint, api_key=server.api_key, api_version=VERSION, max_retries=0
    )


def line(custom_id: str, deployment: str, text: str, url: str = "/chat/completions") -> dict[str, object]:
    body = {"model": deployment, "messages": [{"role": "user", "content": text}], "max_tokens": 30}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def run_batch(client: openai.OpenAI, lines: list[dict[str, object]], endpoint: str = "/chat/completions") -> str:
    data = "\n".join(json.dumps(x) for x in lines).encode()
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    deadline = time.monotonic() + 20
    while client.batches.retrieve(b.id).status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return b.id


def test_deployment_chat_uses_the_deployment_as_the_model(az: openai.AzureOpenAI, server: LocalServer) -> None:
    out = az.chat.completions.create(model="my-gpt4o", messages=[{"role": "user", "content": "hi"}])
    assert out.model == "my-gpt4o" and out.choices[0].message.content
    assert [r["dialect"] for r in server.records()] == ["azure"]


def test_batch_through_azure_openai_keeps_its_own_batches(az: openai.AzureOpenAI, server: LocalServer) -> None:
    batch_id = run_batch(az, [line("a", "dep1", "hello"), line("b", "dep1", "x [[fault:overloaded#az]]")])
    done = az.batches.retrieve(batch_id)
    assert done.status == "completed" and done.request_counts and done.request_counts.completed == 1
    assert done.output_file_id and done.error_file_id
    out = [json.loads(x) for x in az.files.content(done.output_file_id).text.splitlines()]
    assert [x["custom_id"] for x in out] == ["a"]
    assert batch_id in [b.id for b in az.batches.list()]
    # Azure's batches are not OpenAI's: the OpenAI dialect does not list or know them.
    oai = openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0)
    assert batch_id not in [b.id for b in oai.batches.list()]
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve(batch_id)


def test_one_deployment_per_input_file(az: openai.AzureOpenAI) -> None:
    batch_id = run_batch(az, [line("a", "dep1", "hello"), line("b", "dep2", "hello")])
    failed = az.batches.retrieve(batch_id)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "mismatched_model" and failed.errors.data[0].line == 2


def test_the_v1_surface_takes_the_plain_client_and_no_api_version(server: LocalServer) -> None:
    v1 = openai.OpenAI(base_url=f"{server.azure_endpoint}/openai/v1", api_key=server.api_key, max_retries=0)
    out = v1.chat.completions.create(model="dep1", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content
    batch_id = run_batch(v1, [line("a", "dep1", "hi", url="/v1/chat/completions")], endpoint="/v1/chat/completions")
    assert v1.batches.retrieve(batch_id).status == "completed"


def test_a_path_outside_v1_without_api_version_is_not_found(server: LocalServer) -> None:
    r = httpx.get(f"{server.azure_endpoint}/openai/batches", headers={"api-key": server.api_key})
    assert r.status_code == 404 and "api-version" in r.json()["error"]["message"]


def test_the_api_key_header_is_required(server: LocalServer) -> None:
    bad = openai.AzureOpenAI(azure_endpoint=server.azure_endpoint, api_key="nope", api_version=VERSION, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.batches.list()
