"""`freight run DOCUMENTS --endpoint embeddings|responses` against freight serve through the official `openai` SDK:
one vector per document (a long one chunked and averaged), written to results.jsonl and to embeddings.npy beside its
ids; Responses with --schema asking through text.format; and the mistakes refused before anything is sent."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import openai
import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.runner.chunking import average_vectors
from freight.server.testing import LocalServer

cli = CliRunner()
MODEL = "text-embedding-3-small"


def write_docs(path: Path, docs: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    return path


def test_a_thousand_documents_embed_into_one_npy_in_id_order(tmp_path: Path) -> None:
    # Ids that do not sort like their input order, so "in id order" means the input's order.
    docs = {f"doc-{(i * 7919) % 1000:04d}": f"document {i}: some text about topic {i % 17}" for i in range(1000)}
    long_id = "doc-long"  # 40,000 characters, over the model's 8,192-token input limit: chunked and averaged
    docs[long_id] = "\n\n".join(f"Paragraph {p}. " + "words and more words. " * 90 for p in range(20))
    src = write_docs(tmp_path / "docs.jsonl", docs)
    out = tmp_path / "out"
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        result = cli.invoke(
            app,
            ["run", str(src), "--endpoint", "embeddings", "--dimensions", "64", "--provider", "openai",
             "--base-url", srv.openai_base_url, "--model", MODEL, "--no-sample", "--poll-interval", "0.05",
             "--db", str(tmp_path / "f.db"), "--out", str(out)],
            env={"OPENAI_API_KEY": srv.api_key},
        )  # fmt: skip
        sdk = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key)
        direct = sdk.embeddings.create(model=MODEL, input=docs["doc-0007"], dimensions=64, encoding_format="float")
    assert result.exit_code == 0, result.output
    assert "embeddings.npy" in result.output

    matrix = np.load(out / "embeddings.npy")  # one call
    ids = (out / "embeddings.ids.txt").read_text().splitlines()
    assert matrix.shape == (1001, 64) and matrix.dtype == np.float32
    assert ids == list(docs), "row i is the i-th document of the input"
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert np.allclose(matrix[ids.index("doc-0007")], direct.data[0].embedding, atol=1e-6)
    mapped = np.load(out / "embeddings.npy", mmap_mode="r")  # memory-mappable: used in place, not read
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped[500], matrix[500])

    lines = {x["id"]: x for x in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert np.allclose(lines["doc-0007"]["output"], matrix[ids.index("doc-0007")], atol=1e-6)
    long = lines[long_id]
    assert long["status"] == "succeeded" and long["fixes"].count("chunk") >= 2
    assert long["metadata"]["parts"] >= 2 and len(long["output"]) == 64
    report = json.loads((out / "report.json").read_text())
    assert report["succeeded"] == 1001 and report["cost_usd"] > 0  # priced as text-embedding-3-small


def test_chunk_vectors_are_averaged_by_chunk_length() -> None:
    v = average_vectors([[1.0, 0.0], [0.0, 1.0]], [3, 1])  # a part three times as long counts three times
    assert v == pytest.approx([3 / math.sqrt(10), 1 / math.sqrt(10)])


def test_responses_endpoint_with_a_schema_asks_through_text_format(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    src = write_docs(tmp_path / "docs.jsonl", {"a": "total: 12", "b": "total: 30.5"})
    out = tmp_path / "out"
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        result = cli.invoke(
            app,
            ["run", str(src), "--endpoint", "responses", "--schema", str(tmp_path / "schema.json"),
             "--prompt-text", "Extract the total.\n{document}", "--provider", "azure",
             "--base-url", srv.azure_endpoint, "--model", "gpt-4.1-mini", "--price-as", "gpt-4.1-mini",
             "--no-sample", "--poll-interval", "0.05", "--db", str(tmp_path / "f.db"), "--out", str(out)],
            env={"AZURE_OPENAI_API_KEY": srv.api_key},
        )  # fmt: skip
        batches = {r["batch_id"] for r in srv.records()}
    assert result.exit_code == 0, result.output
    lines = {x["id"]: x["output"] for x in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert lines == {"a": {"total": 12}, "b": {"total": 30.5}}
    assert len(batches) == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--endpoint", "embeddings", "--provider", "anthropic"], "--provider openai or --provider azure"),
        (["--endpoint", "embeddings", "--provider", "openai", "--prompt-text", "Sum: {document}"], "drop --prompt"),
        (["--endpoint", "images", "--provider", "openai"], "use one of chat, responses, embeddings"),
        (["--endpoint", "completions", "--provider", "openai"], "lines may name /v1/completions"),
        (["--endpoint", "responses", "--provider", "openai", "--dimensions", "8"], "--dimensions"),
    ],
)
def test_endpoint_mistakes_are_refused_before_anything_is_sent(tmp_path: Path, args: list[str], says: str) -> None:
    src = write_docs(tmp_path / "docs.jsonl", {"a": "text"})
    result = cli.invoke(
        app,
        ["run", str(src), "--model", MODEL, "--base-url", "http://127.0.0.1:9", "--db", str(tmp_path / "f.db"), *args],
        env={"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"},
    )
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert "started" not in result.output  # refused before a job was made


def test_gemini_embeddings_job_through_create_embeddings(tmp_path: Path) -> None:
    docs = {f"g{i}": f"gemini document {i}" for i in range(20)}
    docs["g-long"] = "\n\n".join(f"Part {p}. " + "many words here. " * 60 for p in range(12))  # over 2,048 tokens
    src = write_docs(tmp_path / "docs.jsonl", docs)
    out = tmp_path / "out"
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        result = cli.invoke(
            app,
            ["run", str(src), "--endpoint", "embeddings", "--dimensions", "32", "--provider", "gemini",
             "--base-url", srv.gemini_base_url, "--model", "gemini-embedding-001", "--no-sample",
             "--poll-interval", "0.05", "--db", str(tmp_path / "f.db"), "--out", str(out)],
            env={"GEMINI_API_KEY": srv.api_key},
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    matrix = np.load(out / "embeddings.npy")
    assert matrix.shape == (21, 32) and (out / "embeddings.ids.txt").read_text().splitlines() == list(docs)
    lines = {x["id"]: x for x in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert lines["g-long"]["metadata"]["parts"] >= 2
    assert json.loads((out / "report.json").read_text())["tokens"]["input_tokens"] > 0


def test_vector_writer_header_and_pages(tmp_path: Path) -> None:
    from freight.runner.vectors import IDS, NPY, VectorWriter, npy_header

    with VectorWriter(tmp_path) as w:  # more rows than a page, so the header is rewritten after several pages
        for i in range(1300):
            w.add(f"id{i}", [float(i), -float(i), 0.5])
    m = np.load(tmp_path / NPY, mmap_mode="r")
    assert m.shape == (1300, 3) and m[1299].tolist() == [1299.0, -1299.0, 0.5]
    assert (tmp_path / IDS).read_text().splitlines()[1299] == "id1299"
    # The fixed-size header still holds the largest matrix anyone could write.
    header = npy_header(10**15, 65_536)
    assert len(header) == 128 and header[8:10] == (118).to_bytes(2, "little")
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(io.BytesIO(header[8:]))
    assert (shape, fortran, dtype) == ((10**15, 65_536), False, np.dtype("<f4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    VectorWriter(empty).close()
    assert not (empty / NPY).exists() and (empty / IDS).read_text() == ""
