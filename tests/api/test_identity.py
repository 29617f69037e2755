"""Case 1 of issue 13: the same command against another endpoint is another job - its outputs are never handed back
from the first - and `freight jobs` shows where each job ran. Through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from freight.server.testing import LocalServer

from .conftest import batch_records, freight, write_docs, write_schema


def test_the_same_command_against_another_base_url_is_another_job(
    tmp_path: Path, db_url: str, server: LocalServer, other_server: LocalServer
) -> None:
    docs = write_docs(tmp_path, 4)
    args = ["run", str(docs), "--schema", str(write_schema(tmp_path)), "--model", "claude-haiku-4-5"]
    args += ["--db", db_url, "--poll-interval", "0.05", "--json"]
    env = {"ANTHROPIC_API_KEY": server.api_key}  # both servers take the same key, as two accounts might not

    code, out, err = freight(*args, "--base-url", server.base_url, "--out", str(tmp_path / "a"), env=env)
    assert code == 0, err
    first = json.loads(out)
    assert first["succeeded"] == 4 and first["endpoint"] == server.base_url
    assert len(batch_records(server)) == 4

    code, out, err = freight(*args, "--base-url", other_server.base_url, "--out", str(tmp_path / "b"), env=env)
    assert code == 0, err
    second = json.loads(out)
    assert "started job_" in err and "resuming" not in err
    assert second["job"] != first["job"] and second["endpoint"] == other_server.base_url
    # The second endpoint did the work itself: every document reached it; the first saw nothing more.
    assert sorted(r["custom_id"] for r in batch_records(other_server)) == [f"inv-{i:02d}" for i in range(4)]
    assert len(batch_records(server)) == 4

    # Against the first endpoint again (a trailing slash is the same endpoint): that job, resumed, nothing resent.
    code, out, err = freight(*args, "--base-url", server.base_url + "/", "--out", str(tmp_path / "a"), env=env)
    assert code == 0, err
    assert f"resuming {first['job']}" in err and len(batch_records(server)) == 4

    code, out, _ = freight("jobs", "--db", db_url, "--json")
    endpoints = {j["job_id"]: j["endpoint"] for j in json.loads(out)}
    assert endpoints == {first["job"]: server.base_url, second["job"]: other_server.base_url}
    code, out, _ = freight("jobs", "--db", db_url, env={"COLUMNS": "250"})  # a wide terminal: no cell is cut
    assert code == 0 and "endpoint" in out and server.base_url in out and other_server.base_url in out


def test_the_embedded_model_and_a_provider_are_two_jobs(tmp_path: Path, server: LocalServer) -> None:
    docs = write_docs(tmp_path, 3)
    db = str(tmp_path / "f.db")
    home = str(tmp_path / "home")
    args = ["run", str(docs), "--schema", str(write_schema(tmp_path)), "--db", db, "--poll-interval", "0.05", "--json"]

    # No key, no --base-url: the embedded model (its scripted engine here), and the first line says so.
    code, out, err = freight(*args, "--engine", "scripted", env={"FREIGHT_HOME": home})
    assert code == 0, err
    assert err.splitlines()[0] == (
        "no ANTHROPIC_API_KEY: running on the embedded local model scripted; set the key or --provider/--base-url "
        "to use a provider"
    )
    embedded = json.loads(out)
    assert embedded["endpoint"] == "embedded:scripted" and embedded["succeeded"] == 3

    # The same command with a key and a provider endpoint: a new job, whose requests reach that endpoint.
    code, out, err = freight(
        *args, "--model", "scripted", "--base-url", server.base_url, env={"ANTHROPIC_API_KEY": server.api_key}
    )
    assert code == 0, err
    provider = json.loads(out)
    assert provider["job"] != embedded["job"] and provider["endpoint"] == server.base_url
    assert len(batch_records(server)) == 3
    assert "embedded" not in err
