"""The library facade used from Python, as a notebook or a pipeline would: the same decisions as the CLI, errors as
`FreightError`s carrying the CLI's exit code, progress as the runner's snapshots, nothing printed."""

from __future__ import annotations

from pathlib import Path

import pytest

import freight
from freight.providers import key_env, provider_names
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import SCHEMA, batch_records, write_docs

BAD_PROMPT = "Extract the vendor and the total. [[fault:malformed_json:always#badprompt]]\n\n{document}"


def test_run_from_python_returns_the_report_and_running_again_resumes(
    tmp_path: Path, db_url: str, server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = write_docs(tmp_path, 5)
    notes: list[str] = []
    snapshots: list[freight.api.Snapshot] = []
    settings = dict(
        prompt="Extract the vendor and the total.\n\n{document}",
        schema=SCHEMA,
        provider="anthropic",
        model="claude-haiku-4-5",
        base_url=server.base_url,
        api_key=server.api_key,  # passed, not in the environment: it is used and never stored
        db=db_url,
        out=tmp_path / "out",
        poll_interval=0.05,
    )
    report = freight.run(docs, on_progress=snapshots.append, on_notice=notes.append, **settings)

    assert report.state == "completed" and report.succeeded == 5 and report.failed == 0
    assert report.cost_usd is not None and report.cost_usd > 0
    assert (tmp_path / "out" / "results.jsonl").read_text().count("\n") == 5
    assert "5 documents, 5 succeeded, 0 failed" in report.render()
    assert notes[0] == f"started {report.job_id} (5 pending)"  # counts as words, not a Python dict
    assert snapshots and snapshots[-1].items == {"succeeded": 5} and snapshots[-1].job_id == report.job_id
    assert capsys.readouterr() == ("", "")  # the library prints nothing
    with Store(db_url) as store:
        job = store.get_job(report.job_id)
        assert job is not None and server.api_key not in str(job.config)

    notes.clear()
    again = freight.run(docs, on_notice=notes.append, **settings)
    assert again.job_id == report.job_id and notes == [f"resuming {report.job_id} (5 succeeded)"]
    assert len(batch_records(server)) == 5  # nothing sent twice

    with pytest.raises(freight.FreightError, match="nothing to resume") as done:
        freight.resume(report.job_id, db=db_url)
    assert done.value.exit_code == freight.ExitCode.FAILED


def test_the_facade_refuses_and_gates_like_the_cli(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("FREIGHT_HOME", str(tmp_path / "home"))
    docs = write_docs(tmp_path, 60)
    db = str(tmp_path / "f.db")

    with pytest.raises(freight.UsageError, match="not the embedded local model") as refused:
        freight.run(docs, model="claude-haiku-4-5", db=db)
    assert refused.value.exit_code == freight.ExitCode.USAGE == 2

    with pytest.raises(freight.SampleGateFailed, match="nothing was submitted") as gated:
        freight.run(
            docs, prompt=BAD_PROMPT, schema=SCHEMA, model="scripted", base_url=server.base_url,
            api_key=server.api_key, db=db, sample_size=4,
        )  # fmt: skip
    assert gated.value.exit_code == freight.ExitCode.FAILED
    assert gated.value.report["first_pass_rate"] == 0 and len(gated.value.report["failures"]) == 4
    assert batch_records(server) == [] and len(server.records()) == 4  # the sample's requests, nothing more
    with Store(db) as store:
        (job,) = store.list_jobs()
        assert job.state.value == "stopped"


def test_every_provider_names_its_key_variable() -> None:
    """Which variable holds a key is asked of the adapter, so a plugin provider resolves like a built-in one."""
    assert {name: key_env(name) for name in provider_names()} == {
        "anthropic": "ANTHROPIC_API_KEY",
        "azure": "AZURE_OPENAI_API_KEY",
        "gemini": "GEMINI_API_KEY",
        "openai": "OPENAI_API_KEY",
    }
