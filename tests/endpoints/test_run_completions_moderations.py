"""`freight run` on OpenAI batch files whose lines name /v1/completions or /v1/moderations, end to end against freight
serve through the official `openai` SDK (OpenAI and Azure): results correlated by custom_id, a truncated completion
retried with max_tokens doubled, moderations' `results` as the output, and what each costs."""

from __future__ import annotations

from pathlib import Path

import pytest

from freight.cli import app
from freight.plan.pricing import default_prices
from freight.server.testing import LocalServer

from .test_run_batch_files import batches_of, cli, run, write_lines


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_completions_batch_file_runs_and_truncation_doubles_max_tokens(tmp_path: Path, provider: str) -> None:
    model = "gpt-3.5-turbo-instruct"
    bodies = {
        "plain": {"model": model, "prompt": "hello", "max_tokens": 64},
        "listed": {"model": model, "prompt": ["one prompt in a list"], "max_tokens": 64},
        # The scripted reply is "echo: hello world, say something longer": 10 tokens, cut at 4 and at 8.
        "short": {"model": model, "prompt": "hello world, say something longer", "max_tokens": 4},
    }
    src = write_lines(tmp_path / "cmpl.jsonl", "/v1/completions", bodies)
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        lines = run(srv, provider, src, tmp_path / "out")
        sent = batches_of(srv)
    assert set(bodies) in sent.values(), "one batch holds every line as it was"
    by_id = {x["id"]: x for x in lines}
    assert by_id["plain"]["output"] == "echo: hello" and by_id["plain"]["first_pass"]
    assert by_id["listed"]["output"] == "echo: one prompt in a list"
    short = by_id["short"]
    assert short["status"] == "succeeded" and short["output"] == "echo: hello world, say something longer"
    assert short["fixes"] == ["raise_max_tokens", "raise_max_tokens"]  # 4 -> 8 -> 16 max_tokens


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_moderations_batch_file_runs_free_with_results_as_output(tmp_path: Path, provider: str) -> None:
    bodies = {
        "one": {"model": "omni-moderation-latest", "input": "a harmless sentence"},
        "two": {"model": "text-moderation-latest", "input": ["first text", "second text"]},
        "default": {"input": "no model named"},
    }
    src = write_lines(tmp_path / "mod.jsonl", "/v1/moderations", bodies)
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        lines = run(srv, provider, src, tmp_path / "out")
    by_id = {x["id"]: x for x in lines}
    assert set(by_id) == set(bodies) and all(x["status"] == "succeeded" for x in lines)
    assert [len(by_id[k]["output"]) for k in ("one", "two", "default")] == [1, 2, 1]
    first = by_id["one"]["output"][0]
    assert first["flagged"] is False and first["categories"]["violence"] is False
    assert 0 <= first["category_scores"]["violence"] < 0.01
    assert by_id["two"]["output"][0]["category_scores"] != by_id["two"]["output"][1]["category_scores"]
    # Correlated by custom_id: "one"'s scores are those the service gives for its own text.
    with LocalServer(tmp_path / "again.db", time_scale=0.0002) as srv2:
        import openai

        again = openai.OpenAI(base_url=srv2.openai_base_url, api_key=srv2.api_key).moderations.create(
            model="omni-moderation-latest", input="a harmless sentence"
        )
    assert first["category_scores"]["violence"] == pytest.approx(again.results[0].category_scores.violence)


def test_moderation_models_are_free_and_an_unpriced_completions_model_is_refused(tmp_path: Path) -> None:
    table = default_prices()
    for model in ("omni-moderation-latest", "text-moderation-latest", "omni-moderation-2024-09-26"):
        assert table.lookup(f"openai/{model}")[2].input == 0
    bodies = {"c": {"model": "my-own-instruct-model", "prompt": "hi"}}
    src = write_lines(tmp_path / "cmpl.jsonl", "/v1/completions", bodies)
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        refused = cli.invoke(
            app,
            ["run", str(src), "--provider", "openai", "--base-url", srv.openai_base_url, "--db", str(tmp_path / "f.db"),
             "--out", str(tmp_path / "out"), "--no-sample"],
            env={"OPENAI_API_KEY": srv.api_key},
        )  # fmt: skip
        assert not srv.records(), "nothing of the refused file was sent"
        lines = run(srv, "openai", src, tmp_path / "out2", "--allow-unpriced")
    assert refused.exit_code == 2 and "Traceback" not in refused.output and "my-own-instruct-model" in refused.output
    assert [(x["id"], x["output"]) for x in lines] == [("c", "echo: hi")]


@pytest.mark.parametrize(("url", "body"), [("/v1/completions", {"prompt": "x"}), ("/v1/moderations", {"input": "x"})])
def test_completions_or_moderations_lines_on_another_provider_are_refused(
    tmp_path: Path, url: str, body: dict[str, str]
) -> None:
    src = write_lines(tmp_path / "lines.jsonl", url, {"a": {"model": "gpt-3.5-turbo-instruct", **body}})
    result = cli.invoke(
        app,
        ["run", str(src), "--provider", "gemini", "--base-url", "http://127.0.0.1:9", "--db", str(tmp_path / "f.db")],
        env={"GEMINI_API_KEY": "k"},
    )  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"lines.jsonl: its lines name {url}" in result.output
    assert "--provider openai or --provider azure" in result.output
