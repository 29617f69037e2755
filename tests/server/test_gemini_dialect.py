"""freight serve's Gemini dialect, driven by `google-genai` as users call it, unchanged, over loopback."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from google import genai
from google.genai import errors, types

from freight.server.testing import LocalServer

FAST = 0.0005  # as the server fixture of conftest.py

MODEL = "scripted-ctx-2000"


@pytest.fixture
def gem(server: LocalServer) -> genai.Client:
    return genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.gemini_base_url))


def inline(key: str, text: str, **config: object) -> dict[str, object]:
    return {"contents": [{"parts": [{"text": text}], "role": "user"}], "metadata": {"key": key}, "config": config}


def wait(gem: genai.Client, name: str, timeout: float = 20.0) -> types.BatchJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = gem.batches.get(name=name)
        if job.state is not None and job.state.name not in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{name} did not end")


def test_generate_content_reports_usage_and_max_tokens(gem: genai.Client) -> None:
    out = gem.models.generate_content(model=MODEL, contents="Name a river.")
    assert out.text and out.candidates and out.candidates[0].finish_reason == types.FinishReason.STOP
    assert out.usage_metadata and out.usage_metadata.prompt_token_count and out.usage_metadata.candidates_token_count
    cut = gem.models.generate_content(
        model=MODEL, contents="Go on [[fault:tokens=300:always#g-trunc]]", config={"max_output_tokens": 20}
    )
    assert cut.candidates and cut.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert cut.usage_metadata and cut.usage_metadata.candidates_token_count == 20


@pytest.mark.parametrize(
    ("text", "code", "status"),
    [
        ("word " * 2000, 400, "INVALID_ARGUMENT"),
        ("x [[fault:rate_limited#g-rl]]", 429, "RESOURCE_EXHAUSTED"),
        ("x [[fault:overloaded#g-ov]]", 503, "UNAVAILABLE"),
        ("x [[fault:server_error#g-se]]", 500, "INTERNAL"),
    ],
)
def test_errors_have_googles_shape(gem: genai.Client, text: str, code: int, status: str) -> None:
    with pytest.raises(errors.APIError) as info:
        gem.models.generate_content(model=MODEL, contents=text)
    assert (info.value.code, info.value.status) == (code, status)
    if code == 400:
        assert info.value.message == "The input token count (2500) exceeds the maximum number of tokens allowed (2000)."


def test_a_wrong_key_is_400_api_key_invalid(server: LocalServer) -> None:
    bad = genai.Client(api_key="nope", http_options=types.HttpOptions(base_url=server.gemini_base_url))
    with pytest.raises(errors.ClientError) as info:
        bad.models.generate_content(model=MODEL, contents="hi")
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert "API_KEY_INVALID" in json.dumps(info.value.details)


def test_inline_batch_lifecycle_get_list_delete(gem: genai.Client, server: LocalServer) -> None:
    src = [
        inline("a", "Hello."),
        inline("b", "x [[fault:invalid_request#g-inl]]"),
        inline("c", "x [[fault:expired#g-e]]"),
    ]
    job = gem.batches.create(model=MODEL, src=src, config={"display_name": "my-ref"})  # type: ignore[arg-type]
    assert job.name and job.name.startswith("batches/") and job.display_name == "my-ref"
    assert job.state == types.JobState.JOB_STATE_PENDING
    ended = wait(gem, job.name)
    assert ended.state == types.JobState.JOB_STATE_SUCCEEDED and ended.end_time is not None
    assert ended.dest and ended.dest.inlined_responses
    by_key = {(r.metadata or {})["key"]: r for r in ended.dest.inlined_responses}
    assert by_key["a"].response and by_key["a"].response.text
    assert by_key["b"].error and by_key["b"].error.code == 3  # google.rpc.Code INVALID_ARGUMENT
    assert by_key["c"].error and by_key["c"].error.code == 4  # the request never ran before the window closed
    assert job.name in [j.name for j in gem.batches.list(config={"page_size": 1})]  # paged one by one
    received = [r["custom_id"] for r in server.records() if r["batch_id"] == job.name]
    assert sorted(received) == ["a", "b", "c"]
    gem.batches.delete(name=job.name)
    with pytest.raises(errors.ClientError) as info:
        gem.batches.get(name=job.name)
    assert info.value.code == 404


def test_file_batch_uploads_resumably_and_results_download_as_a_file(gem: genai.Client) -> None:
    lines = [
        {"key": f"k{i}", "request": {"contents": [{"parts": [{"text": f"Q{i}"}], "role": "user"}]}} for i in range(3)
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode() + b"\nnot json\n"
    uploaded = gem.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl", "display_name": "in"})
    assert uploaded.name and uploaded.name.startswith("files/") and uploaded.size_bytes == len(data)
    assert gem.files.get(name=uploaded.name).display_name == "in"
    assert gem.files.download(file=uploaded.name) == data.rstrip(b"\n") + b"\n"
    job = gem.batches.create(model=MODEL, src=uploaded.name)
    assert job.name
    ended = wait(gem, job.name)
    assert ended.dest and ended.dest.file_name and ended.dest.inlined_responses is None
    out = [json.loads(x) for x in gem.files.download(file=ended.dest.file_name).splitlines()]
    assert {x["key"] for x in out if "response" in x} == {"k0", "k1", "k2"}
    assert [x["error"]["code"] for x in out if x["key"] == "line-4"] == [3]  # the bad line is reported, by number


def test_cancel_ends_cancelled_with_unrun_requests_cancelled(tmp_path: object, server: LocalServer) -> None:
    gem = genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.gemini_base_url))
    job = gem.batches.create(model=MODEL, src=[inline(f"c{i}", f"Q{i}") for i in range(300)])  # type: ignore[arg-type]
    assert job.name
    gem.batches.cancel(name=job.name)
    ended = wait(gem, job.name)
    assert ended.state == types.JobState.JOB_STATE_CANCELLED
    assert ended.dest and ended.dest.inlined_responses
    codes = {r.error.code if r.error else 0 for r in ended.dest.inlined_responses}
    assert 1 in codes  # google.rpc.Code CANCELLED for the requests that never ran
    with pytest.raises(errors.ClientError) as info:
        gem.batches.cancel(name=job.name)
    assert info.value.status == "FAILED_PRECONDITION"


def test_inline_body_over_20_mb_is_refused(server: LocalServer) -> None:
    big = json.dumps({"batch": {"inputConfig": {"requests": {"requests": []}}}, "pad": "x" * (20 * 1024 * 1024)})
    r = httpx.post(
        f"{server.gemini_base_url}/v1/models/{MODEL}:batchGenerateContent",
        content=big,
        headers={"x-goog-api-key": server.api_key},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "20971520" in r.json()["error"]["message"]


def test_a_file_over_2_gb_is_refused_at_the_start_of_its_upload(server: LocalServer) -> None:
    r = httpx.post(
        f"{server.gemini_base_url}/upload/v1beta/files",
        json={"file": {"display_name": "huge"}},
        headers={
            "x-goog-api-key": server.api_key,
            "x-goog-upload-protocol": "resumable",
            "x-goog-upload-command": "start",
            "x-goog-upload-header-content-length": str(2 * 1024**3 + 1),
        },
    )
    assert r.status_code == 400 and "x-goog-upload-url" not in r.headers


@pytest.fixture
def throttled(tmp_path: object) -> Iterator[genai.Client]:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with LocalServer(tmp_path / "t.db", time_scale=FAST, faults="http429=1,retry_after=0.25") as srv:
        yield genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.gemini_base_url))


def test_planted_429_speaks_gemini_with_a_retry_delay(throttled: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        throttled.batches.list()
    assert (info.value.code, info.value.status) == (429, "RESOURCE_EXHAUSTED")
    details = info.value.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.25s"} in details


# --- where google-genai 3.3 and ../shared/specs/batch-apis.md disagree (the SDK wins) ---------------------------


def test_sdk_disagrees_default_api_version_is_v1_not_v1beta(gem: genai.Client, server: LocalServer) -> None:
    """The spec says paths are relative to `{base_url}/v1beta/`; the SDK 3.3 sends `v1` unless told otherwise."""
    sent: list[str] = []
    client = genai.Client(
        api_key=server.api_key,
        http_options=types.HttpOptions(
            base_url=server.gemini_base_url,
            httpx_client=__import__("httpx2").Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]}),
        ),
    )
    client.models.generate_content(model=MODEL, contents="hi")
    assert sent == [f"/gemini/v1/models/{MODEL}:generateContent"]


def test_sdk_disagrees_job_states_travel_as_batch_state_in_operation_metadata(server: LocalServer) -> None:
    """The spec names JOB_STATE_*; on the wire a batch is an operation whose `metadata.state` is BATCH_STATE_*, which
    the SDK renames. The SDK also drops `metadata.batchStats`, so adapters learn counts only from the results."""
    gem = genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.gemini_base_url))
    job = gem.batches.create(model=MODEL, src=[inline("a", "hi")])  # type: ignore[arg-type]
    raw = httpx.get(f"{server.gemini_base_url}/v1/{job.name}", headers={"x-goog-api-key": server.api_key}).json()
    assert raw["metadata"]["state"].startswith("BATCH_STATE_") and "batchStats" in raw["metadata"]
    assert job.state == types.JobState.JOB_STATE_PENDING and job.completion_stats is None
