"""Case 2 of issue 13: the embedded local model runs a job only when it is the embedded model - the no-key default
says so, `--provider local` asks for it, and a provider's model name on it is refused (exit 2) before anything runs.
With a key, a model must be named."""

from __future__ import annotations

import json
from pathlib import Path

from freight.server.testing import LocalServer

from .conftest import batch_records, freight, write_docs


def test_a_paid_model_name_on_the_embedded_model_is_refused_before_anything_runs(tmp_path: Path) -> None:
    docs = write_docs(tmp_path, 3)
    home = tmp_path / "home"
    db = str(tmp_path / "f.db")
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
    code, _, err = freight("sample", str(docs), "--prompt", str(docs / "inv-00.txt"), "--model", "claude-haiku-4-5",
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
