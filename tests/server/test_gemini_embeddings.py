"""Gemini embedding batches in freight serve, driven by google-genai's `batches.create_embeddings` (inline and from
a file) and `models.embed_content`, unchanged, over loopback."""

from __future__ import annotations

import io
import json
import math
import time
import warnings

import pytest
from google import genai
from google.genai import errors, types

from freight.server.testing import LocalServer

MODEL = "gemini-embedding-001"


@pytest.fixture
def gem(server: LocalServer) -> genai.Client:
    return genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.gemini_base_url))


def wait(gem: genai.Client, name: str, timeout: float = 20.0) -> types.BatchJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = gem.batches.get(name=name)
        if job.state is not None and job.state.name not in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{name} did not end")


def create(gem: genai.Client, src: types.EmbeddingsBatchJobSourceOrDict) -> types.BatchJob:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_embeddings is marked experimental by the SDK
        return gem.batches.create_embeddings(model=MODEL, src=src)


def test_inline_embedding_batch_gives_vectors_in_input_order(gem: genai.Client) -> None:
    texts = ["the cat sat", "a dog ran", "the cat sat"]
    job = create(gem, {"inlined_requests": {"contents": texts, "config": {"output_dimensionality": 16}}})
    done = wait(gem, job.name or "")
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.dest and done.dest.inlined_embed_content_responses
    items = done.dest.inlined_embed_content_responses
    vectors = [i.response.embedding.values for i in items if i.response and i.response.embedding]
    assert [len(v or []) for v in vectors] == [16, 16, 16]
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert math.isclose(math.hypot(*(vectors[0] or [])), 1.0, rel_tol=1e-5)
    # The synchronous call gives the same vector for the same text.
    sync = gem.models.embed_content(model=MODEL, contents="a dog ran", config={"output_dimensionality": 16})
    assert sync.embeddings and sync.embeddings[0].values == pytest.approx(vectors[1])


def test_file_embedding_batch_answers_each_key_and_refuses_an_input_over_the_limit(gem: genai.Client) -> None:
    lines = [
        {"key": "short", "request": {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 8}},
        {"key": "long", "request": {"content": {"parts": [{"text": "x" * 10_000}]}}},
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    uploaded = gem.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl", "display_name": "emb"})
    done = wait(gem, create(gem, {"file_name": uploaded.name}).name or "")
    assert done.dest and done.dest.file_name
    out = {x["key"]: x for x in map(json.loads, gem.files.download(file=done.dest.file_name).splitlines())}
    assert len(out["short"]["response"]["embedding"]["values"]) == 8
    assert out["long"]["error"]["code"] == 3 and "2048" in out["long"]["error"]["message"]  # INVALID_ARGUMENT
    with pytest.raises(errors.ClientError):
        gem.models.embed_content(model=MODEL, contents="y" * 10_000)
