"""Case 7 of issue 13: honest cost. Each request priced at its own model (ready-made lines carry theirs); a model
with no price refused before any spend, priced with --price-as / --prices, or run with --allow-unpriced and then
every cost reads unknown, never $0; the sample's spend in the job's ledger; the cost broken down by fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from freight.server.testing import LocalServer

from .conftest import batch_records, freight, write_docs, write_schema

# US dollars per million tokens, synchronous, as the packaged table lists them; the batch price is half.
GPT_4O_MINI = (0.15, 0.60)
GPT_4O = (2.50, 10.00)
HAIKU = (1.00, 5.00)


def _lines(path: Path, models: list[str]) -> Path:
    rows = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": m, "max_tokens": 100, "messages": [{"role": "user", "content": f"say hello {i} " * 5}]},
        }
        for i, m in enumerate(models)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _dollars(usage: dict[str, int], price: tuple[float, float], batch: bool = True) -> float:
    full = (usage["input_tokens"] * price[0] + usage["output_tokens"] * price[1]) / 1e6
    return full / 2 if batch else full


def test_ready_made_lines_are_priced_at_their_own_model(tmp_path: Path, db_url: str, server: LocalServer) -> None:
    models = ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]
    batch = _lines(tmp_path / "batch.jsonl", models)
    out = tmp_path / "o"
    code, stdout, err = freight(
        "run", str(batch), "--provider", "openai", "--model", "gpt-4.1", "--base-url", server.openai_base_url,
        "--db", db_url, "--poll-interval", "0.05", "--out", str(out), "--json",
        env={"OPENAI_API_KEY": server.api_key},
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    lines = _results(out)
    for line, model in zip(lines, models, strict=True):
        price = GPT_4O_MINI if model == "gpt-4o-mini" else GPT_4O  # the line's model, not --model gpt-4.1
        assert line["cost_usd"] == pytest.approx(_dollars(line["usage"], price), abs=1e-6), line  # 6 decimals kept
        assert line["cost_usd"] > 0 and line["attempts"] == 1
    assert report["cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in lines), abs=1e-5)
    assert report["sync_cost_usd"] == pytest.approx(2 * report["cost_usd"], rel=1e-6)
    assert report["cost_by_fix"] == {"first_pass": pytest.approx(report["cost_usd"], rel=1e-6)}


def test_an_unpriced_model_is_refused_before_any_spend_then_priced_or_unknown(
    tmp_path: Path, db_url: str, server: LocalServer
) -> None:
    batch = _lines(tmp_path / "batch.jsonl", ["my-deployment", "my-deployment"])
    common = ["run", str(batch), "--provider", "openai", "--base-url", server.openai_base_url, "--db", db_url]
    common += ["--poll-interval", "0.05", "--json"]
    env = {"OPENAI_API_KEY": server.api_key}

    code, _, err = freight(*common, "--out", str(tmp_path / "refused"), env=env)
    assert code == 2, err
    assert "no price for model 'my-deployment'" in err and "nothing was sent" in err
    assert "--price-as MODEL" in err and "--prices FILE" in err and "--allow-unpriced" in err
    assert server.records() == []  # refused before any spend
    assert json.loads(freight("jobs", "--db", db_url, "--json")[1]) == []

    # --allow-unpriced: it runs, and every cost reads unknown - never $0.
    out = tmp_path / "unknown"
    code, stdout, err = freight(*common, "--allow-unpriced", "--out", str(out), env=env)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["succeeded"] == 2 and report["cost_usd"] is None and report["saving_usd"] is None
    assert [x["cost_usd"] for x in _results(out)] == [None, None]
    code, text, _ = freight("results", report["job"], "--db", db_url, "--out", str(out))
    assert "cost: unknown" in text and "$0" not in text
    status = json.loads(freight("status", report["job"], "--db", db_url, "--json")[1])
    assert status["cost_usd"] is None
    assert len(batch_records(server)) == 2

    # Pricing is not part of what is asked: the same command with a price is the same job, and what was billed
    # while it had no price stays unknown rather than being guessed afterwards.
    code, stdout, err = freight(*common, "--price-as", "gpt-4o", "--out", str(tmp_path / "again"), env=env)
    assert code == 0 and f"resuming {report['job']}" in err and json.loads(stdout)["cost_usd"] is None

    # --price-as: a model the table does not list, priced as one it does.
    fresh = _lines(tmp_path / "fresh.jsonl", ["my-deployment"])
    out = tmp_path / "as"
    code, stdout, err = freight(
        *common[:1], str(fresh), *common[2:], "--price-as", "gpt-4o", "--out", str(out), env=env
    )
    assert code == 0, err
    (line,) = _results(out)
    assert line["cost_usd"] == pytest.approx(_dollars(line["usage"], GPT_4O), abs=1e-6) and line["cost_usd"] > 0

    # --prices FILE: the deployment's own prices, on a fresh input so the run is billed anew.
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "providers:\n  azure:\n    models:\n"
        "      my-deployment: {input: 4.0, output: 8.0, cache_write: 4.0, cache_read: 1.0}\n"
    )
    again = _lines(tmp_path / "again.jsonl", ["my-deployment"])
    out = tmp_path / "priced"
    code, stdout, err = freight(
        "run", str(again), "--provider", "openai", "--base-url", server.openai_base_url, "--db", db_url,
        "--poll-interval", "0.05", "--json", "--prices", str(prices), "--out", str(out), env=env,
    )  # fmt: skip
    assert code == 0, err
    (line,) = _results(out)
    assert line["cost_usd"] == pytest.approx(_dollars(line["usage"], (4.0, 8.0)), abs=1e-6) and line["cost_usd"] > 0


def test_the_sample_is_in_the_ledger_and_the_cost_is_broken_down_by_fix(
    tmp_path: Path, db_url: str, server: LocalServer
) -> None:
    docs = write_docs(tmp_path, 6, extra={"bad-json": "vendor: Odd\ntotal: 1\n[[fault:malformed_json:always#bj]]"})
    out = tmp_path / "o"
    args = ["run", str(docs), "--schema", str(write_schema(tmp_path)), "--model", "claude-haiku-4-5"]
    args += ["--base-url", server.base_url, "--db", db_url, "--poll-interval", "0.05", "--out", str(out)]
    # One document never answers JSON: its one retry is a re-ask, whatever the sample picked.
    args += ["--sample", "--sample-size", "3", "--min-first-pass", "0.5", "--max-retries", "1"]
    code, stdout, err = freight(*args, env={"ANTHROPIC_API_KEY": server.api_key})
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    sync_records = [r for r in server.records() if r["batch_id"] is None]
    assert len(sync_records) == 3  # the sample's three requests, sent synchronously

    by_fix = report["cost_by_fix"]
    assert set(by_fix) == {"sample", "first_pass", "reask"} and all(v > 0 for v in by_fix.values())
    assert report["cost_usd"] == pytest.approx(sum(by_fix.values()), abs=3e-6)  # each rounded to 6 decimals
    # Batch lines, re-asks included, are the documents' own costs; the sample is paid on top, at the sync price.
    lines = _results(out)
    assert by_fix["first_pass"] + by_fix["reask"] == pytest.approx(sum(x["cost_usd"] for x in lines), abs=1e-5)
    assert [x["fixes"] for x in lines if x["id"] == "bad-json"] == [["reask"]]
    assert report["saving_usd"] == pytest.approx(report["sync_cost_usd"] - report["cost_usd"], rel=1e-6)
    assert "cost by fix: sample $" in stdout and "first pass $" in stdout and "reask $" in stdout
    progress = [x for x in err.splitlines() if x.startswith("[")]
    assert progress[-1].endswith(f"cost ${report['cost_usd']:.4f}")  # the progress display ends where the report does
    status = json.loads(freight("status", report["job"], "--db", db_url, "--json")[1])
    assert status["cost_usd"] == pytest.approx(report["cost_usd"], rel=1e-6)


def test_price_as_must_name_a_listed_model_and_prices_only_unlisted_ones(tmp_path: Path) -> None:
    from freight.domain import Usage
    from freight.plan.pricing import Pricer

    batch = _lines(tmp_path / "batch.jsonl", ["my-deployment"])
    code, _, err = freight(
        "run", str(batch), "--provider", "openai", "--base-url", "http://127.0.0.1:9", "--price-as", "gtp-4o",
        "--db", str(tmp_path / "f.db"), env={"OPENAI_API_KEY": "k"},
    )  # fmt: skip
    assert code == 2 and "--price-as 'gtp-4o'" in err and "Did you mean gpt-4o" in err
    pricer = Pricer(price_as="gpt-4o")
    usage = Usage(input_tokens=1_000_000)
    assert pricer.cost("gpt-4o-mini", usage, batch=False) == pytest.approx(0.15)  # listed: its own price
    assert pricer.cost("my-deployment", usage, batch=False) == pytest.approx(2.50)  # unlisted: priced as gpt-4o
    assert Pricer().cost("my-deployment", usage, batch=False) is None  # no price: None, never 0
