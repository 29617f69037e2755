"""`freight run` on OpenAI batch files whose lines name /v1/embeddings, /v1/responses or /v1/chat/completions, end to
end against freight serve through the official `openai` SDK (OpenAI and Azure), results correlated by custom_id."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.server.testing import LocalServer

cli = CliRunner()
KEYS = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY"}


def write_lines(path: Path, url: str, bodies: dict[str, dict[str, Any]]) -> Path:
    lines = [json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": b}) for cid, b in bodies.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(srv: LocalServer, provider: str, input_file: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    result = cli.invoke(
        app,
        ["run", str(input_file), "--provider", provider, "--base-url", srv.url_for(provider), "--mode", "batch",
         "--db", str(out.parent / "f.db"), "--out", str(out), "--poll-interval", "0.05", "--no-sample", *extra],
        env={KEYS[provider]: srv.api_key},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def batches_of(srv: LocalServer) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for r in srv.records():
        if r["batch_id"] is not None:
            found.setdefault(r["batch_id"], set()).add(r["custom_id"])
    return found


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_embeddings_batch_file_runs_as_is(tmp_path: Path, provider: str) -> None:
    model = "text-embedding-3-small"
    bodies = {f"doc-{i}": {"model": model, "input": f"text number {i}", "dimensions": 32} for i in range(5)}
    src = write_lines(tmp_path / "emb.jsonl", "/v1/embeddings", bodies)
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        lines = run(srv, provider, src, tmp_path / "out", "--model", model)
        sent = batches_of(srv)
    assert list(sent.values()) == [set(bodies)], "one batch, every line once"
    by_id = {x["id"]: x for x in lines}
    assert set(by_id) == set(bodies) and all(x["status"] == "succeeded" for x in lines)
    vectors = {cid: x["output"] for cid, x in by_id.items()}
    assert all(len(v) == 32 and abs(math.hypot(*v) - 1) < 1e-5 for v in vectors.values())
    assert vectors["doc-0"] != vectors["doc-1"]
    # Correlated by custom_id: doc-3's vector is the one the service gives for doc-3's text.
    with LocalServer(tmp_path / "again.db", time_scale=0.0002) as srv2:
        import openai

        again = openai.OpenAI(base_url=srv2.openai_base_url, api_key=srv2.api_key).embeddings.create(
            model=model, input="text number 3", dimensions=32, encoding_format="float"
        )
    assert vectors["doc-3"] == pytest.approx(again.data[0].embedding)


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_responses_batch_file_runs_and_truncation_doubles_max_output_tokens(tmp_path: Path, provider: str) -> None:
    model = "gpt-4.1-mini"
    schema = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    bodies = {
        "plain": {"model": model, "input": "hello", "instructions": "answer briefly"},
        "json": {
            "model": model,
            "input": "invoice\ntotal: 41.5",
            "text": {"format": {"type": "json_schema", "name": "inv", "schema": schema}},
        },
        # The scripted reply is "echo: hello world, say something longer": 10 tokens, cut at 4 and at 8.
        "short": {"model": model, "input": "hello world, say something longer", "max_output_tokens": 4},
    }
    src = write_lines(tmp_path / "resp.jsonl", "/v1/responses", bodies)
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        lines = run(srv, provider, src, tmp_path / "out", "--model", model)
    by_id = {x["id"]: x for x in lines}
    assert by_id["plain"]["output"] == "echo: hello" and by_id["plain"]["first_pass"]
    assert by_id["json"]["output"] == {"total": 41.5}
    short = by_id["short"]
    assert short["status"] == "succeeded" and short["output"] == "echo: hello world, say something longer"
    assert short["fixes"] == ["raise_max_tokens", "raise_max_tokens"]  # 4 -> 8 -> 16 max_output_tokens


def test_chat_batch_file_still_runs_and_an_unknown_url_is_refused(tmp_path: Path) -> None:
    bodies = {"c1": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}
    src = write_lines(tmp_path / "chat.jsonl", "/v1/chat/completions", bodies)
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        lines = run(srv, "openai", src, tmp_path / "out", "--model", "gpt-4o-mini")
        assert [(x["id"], x["output"]) for x in lines] == [("c1", "echo: hi")]
        bad = write_lines(tmp_path / "bad.jsonl", "/v1/audio/speech", {"a": {"model": "tts-1", "input": "x"}})
        result = cli.invoke(
            app,
            ["run", str(bad), "--provider", "openai", "--base-url", srv.openai_base_url, "--model", "tts-1",
             "--db", str(tmp_path / "g.db")],
            env={"OPENAI_API_KEY": srv.api_key},
        )  # fmt: skip
        assert not [r for r in srv.records() if r["custom_id"] == "a"], "nothing of the refused file was sent"
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "bad.jsonl:1" in result.output and "/v1/audio/speech" in result.output
    assert all(f"/v1/{api}" in result.output for api in ("embeddings", "responses", "completions", "moderations"))


def test_a_file_mixing_endpoints_goes_out_as_one_batch_per_endpoint(tmp_path: Path) -> None:
    emb = {"model": "text-embedding-3-small", "dimensions": 8}
    lines = [
        {"custom_id": "e1", "url": "/v1/embeddings", "body": {**emb, "input": "one"}},
        {"custom_id": "r1", "url": "/v1/responses", "body": {"model": "gpt-4.1-mini", "input": "two"}},
        {"custom_id": "e2", "url": "/v1/embeddings", "body": {**emb, "input": "three"}},
    ]
    src = tmp_path / "mixed.jsonl"
    src.write_text("".join(json.dumps({**x, "method": "POST"}) + "\n" for x in lines))
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        results = run(srv, "openai", src, tmp_path / "out")
        sent = batches_of(srv)
    assert sorted(sorted(ids) for ids in sent.values()) == [["e1", "e2"], ["r1"]]
    by_id = {x["id"]: x["output"] for x in results}
    assert by_id["r1"] == "echo: two" and len(by_id["e1"]) == len(by_id["e2"]) == 8


def test_a_responses_line_is_sent_with_what_freight_does_not_model() -> None:
    from freight.providers.openai import OpenAIProvider
    from freight.providers.openai_endpoints import request_of_line

    schema = {"type": "object"}
    body = {
        "model": "gpt-5-mini",
        "input": [{"role": "developer", "content": "be terse"}, {"role": "user", "content": "hi"}],
        "reasoning": {"effort": "low"},
        "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "x", "schema": schema}},
        "max_output_tokens": 300,
    }
    request = request_of_line({"custom_id": "r", "method": "POST", "url": "/v1/responses", "body": body})
    line = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:9/v1").batch_line(request)
    assert line["url"] == "/v1/responses"
    sent = line["body"]
    assert sent["reasoning"] == {"effort": "low"} and sent["text"]["verbosity"] == "low"
    assert sent["text"]["format"]["schema"] == schema and sent["max_output_tokens"] == 300
    assert sent["instructions"] == "be terse" and sent["input"] == "hi"


def test_an_embeddings_line_over_the_input_limit_fails_saying_how_to_split_it(tmp_path: Path) -> None:
    bodies = {
        "ok": {"model": "text-embedding-3-small", "input": "short", "dimensions": 8},
        "huge": {"model": "text-embedding-3-small", "input": "word " * 8000, "dimensions": 8},  # 10,000 tokens
    }
    src = write_lines(tmp_path / "emb.jsonl", "/v1/embeddings", bodies)
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        lines = {x["id"]: x for x in run(srv, "openai", src, tmp_path / "out")}
    assert lines["ok"]["status"] == "succeeded" and lines["huge"]["status"] == "failed"
    error = lines["huge"]["error"]
    assert error["kind"] == "context_overflow" and "--endpoint embeddings, which splits them" in error["message"]


def test_embeddings_lines_on_a_provider_without_embeddings_are_refused(tmp_path: Path) -> None:
    src = write_lines(
        tmp_path / "emb.jsonl", "/v1/embeddings", {"a": {"model": "text-embedding-3-small", "input": "x"}}
    )
    result = cli.invoke(
        app,
        [
            "run",
            str(src),
            "--provider",
            "anthropic",
            "--base-url",
            "http://127.0.0.1:9",
            "--db",
            str(tmp_path / "f.db"),
        ],
        env={"ANTHROPIC_API_KEY": "k"},
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "emb.jsonl: its lines name /v1/embeddings" in result.output and "--provider openai" in result.output
