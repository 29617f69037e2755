"""Case 2 of issue 13: the embedded local model runs a job only when it is the embedded model - the no-key default
says so, `--provider local` asks for it, and a provider's model name on it is refused (exit 2) before anything runs.
With a key, a model must be named."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from freight.server.testing import LocalServer
from freight.store import Store
from freight.target import connect, embedded_kept, prepare

from .conftest import batch_records, freight, write_docs, write_schema


def test_a_paid_model_name_on_the_embedded_model_is_refused_before_anything_runs(tmp_path: Path, db_url: str) -> None:
    docs = write_docs(tmp_path, 3)
    home = tmp_path / "home"
    db = db_url
    code, out, err = freight(
        "run", str(docs), "--model", "claude-haiku-4-5", "--db", db, env={"FREIGHT_HOME": str(home)}
    )
    assert code == 2, err
    assert "--model claude-haiku-4-5: that is not the embedded local model (smollm2-135m)" in err
    assert "ANTHROPIC_API_KEY is not set: nothing was sent" in err and "drop --model" in err
    assert "Traceback" not in err and "started" not in err
    assert not (home / "serve-local.db").exists()  # the embedded server was never started
    assert json.loads(freight("jobs", "--db", db, "--json")[1]) == []  # and no job was made

    # Explicitly on the embedded model, a provider's name is refused the same way, key or no key.
    code, _, err = freight(
        "run", str(docs), "--provider", "local", "--model", "gpt-4o-mini", "--db", db,
        env={"FREIGHT_HOME": str(home), "ANTHROPIC_API_KEY": "sk-real"},
    )  # fmt: skip
    assert code == 2 and "--provider local was given: nothing was sent" in err
    # Sampling would spend on it too: refused alike.
    (tmp_path / "prompt.txt").write_text("Extract.\n{document}")  # a prompt without {document} is refused first
    code, _, err = freight("sample", str(docs), "--prompt", str(tmp_path / "prompt.txt"), "--model", "claude-haiku-4-5",
                           "--db", db, env={"FREIGHT_HOME": str(home)})  # fmt: skip
    assert code == 2 and "not the embedded local model" in err


def test_provider_local_runs_on_the_embedded_model_even_with_a_key(tmp_path: Path) -> None:
    docs = write_docs(tmp_path, 2)
    code, out, err = freight(
        "run", str(docs), "--provider", "local", "--engine", "scripted", "--db", str(tmp_path / "f.db"),
        "--poll-interval", "0.05", "--json",
        env={"FREIGHT_HOME": str(tmp_path / "home"), "ANTHROPIC_API_KEY": "sk-must-not-be-used"},
    )  # fmt: skip
    assert code == 0, err
    assert err.splitlines()[0] == "--provider local: running on the embedded local model scripted"
    report = json.loads(out)
    assert report["succeeded"] == 2 and report["endpoint"] == "embedded:scripted" and report["cost_usd"] == 0
    # The embedded server's window covers the work: its batches expire in weeks, not in a scaled 24 h (86 s), so
    # requests a slow local model has not reached yet wait for it instead of expiring and being computed again.
    with Store(str(tmp_path / "f.db")) as store:
        (batch,) = store.batches(report["job"])
    assert batch["expires_at"] - batch["submitted_at"] > timedelta(days=7)


def test_with_a_key_a_model_must_be_named(tmp_path: Path, server: LocalServer) -> None:
    docs = write_docs(tmp_path, 2)
    code, _, err = freight("run", str(docs), "--db", str(tmp_path / "f.db"), env={"ANTHROPIC_API_KEY": server.api_key})
    assert code == 2 and "name a --model for anthropic (e.g. --model claude-" in err
    code, _, err = freight(
        "run", str(docs), "--provider", "openai", "--base-url", server.openai_base_url, "--db", str(tmp_path / "f.db"),
        env={"OPENAI_API_KEY": server.api_key},
    )  # fmt: skip
    assert code == 2 and "name a --model for openai" in err
    assert server.records() == [] and batch_records(server) == []


def test_resume_goes_back_to_the_embedded_engine_the_job_ran_on(tmp_path: Path) -> None:
    """The embedded server's port changes every run: the job is found again, and resumed, by its engine."""
    docs = write_docs(tmp_path, 55)  # over 50 documents: sampled first
    write_schema(docs.parent)
    bad = tmp_path / "bad.txt"
    bad.write_text("Extract. [[fault:malformed_json:always#bad]]\n\n{document}")
    db = str(tmp_path / "f.db")
    env: dict[str, str | None] = {"FREIGHT_HOME": str(tmp_path / "home")}
    code, _, err = freight(
        "run", str(docs), "--prompt", str(bad), "--schema", str(docs.parent / "schema.json"), "--engine", "scripted",
        "--sample-size", "3", "--max-retries", "0", "--db", db, env=env,
    )  # fmt: skip
    assert code == 1 and "is stopped" in err, err
    (job,) = json.loads(freight("jobs", "--db", db, "--json")[1])
    assert job["state"] == "stopped" and job["endpoint"] == "embedded:scripted"

    # No --engine on resume: the scripted engine is the job's own (the default engine, llama.cpp, is not started).
    code, out, err = freight("resume", job["job_id"], "--db", db, "--poll-interval", "0.05", "--json", env=env)
    assert code == 0, err
    report = json.loads(out)
    assert report["job"] == job["job_id"] and report["endpoint"] == "embedded:scripted"
    assert report["documents"] == 55 and report["failed"] == 55  # the prompt is still bad; every document answered
    assert not (tmp_path / "home" / "serve-local.db").exists()


def test_the_sample_and_the_run_talk_to_one_embedded_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `freight run --sample` on the embedded model connects twice (the sample, then the run): inside
    # `embedded_kept` (as the CLI and api.run hold it) both reach one server, started once; without it, each
    # connection starts and stops its own.
    monkeypatch.setenv("FREIGHT_HOME", str(tmp_path / "home"))
    opts = prepare(write_docs(tmp_path, 2), provider="local", engine="scripted")
    with embedded_kept():
        with connect(opts) as sample, connect(opts) as run:
            assert sample.base_url == run.base_url  # type: ignore[attr-defined]
            assert httpx.get(f"{run.base_url}/v1/messages/batches", timeout=10).status_code == 401  # type: ignore[attr-defined]
        with connect(opts) as later:
            assert later.base_url == sample.base_url  # type: ignore[attr-defined]  # still up until the end
        kept = sample.base_url  # type: ignore[attr-defined]
    with pytest.raises(httpx.ConnectError):  # stopped with the block
        httpx.get(f"{kept}/v1/messages/batches", timeout=5)
    with connect(opts) as one, connect(opts) as two:
        assert one.base_url != two.base_url  # type: ignore[attr-defined]
