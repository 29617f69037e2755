"""Against freight serve: a prompt that fails its sample is stopped before any batch is submitted; a good one runs;
every sample run is kept, and --compare shows prompt versions side by side on the same documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.domain import JobState
from freight.runner.inputs import Document
from freight.runner.job import RunOptions
from freight.runner.sample import load_samples, request_for
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import BAD_PROMPT, GOOD_PROMPT, write_folder, write_schema


def _cli(tmp_path: Path, server: LocalServer, *args: str) -> tuple[int, str]:
    """Exit code, and everything printed (stdout and stderr) - or stdout alone with --json."""
    env = {"ANTHROPIC_API_KEY": server.api_key, "FREIGHT_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(app, [*args, "--db", str(tmp_path / "f.db"), "--base-url", server.base_url], env=env)
    return result.exit_code, result.stdout if "--json" in args else result.output


def _corpus(tmp_path: Path, n: int = 60) -> Path:
    texts = {f"inv-{i:03d}": f"vendor: Vendor {i}\ntotal: {i}.50\nPlease pay soon." for i in range(n)}
    return write_folder(tmp_path / "docs", texts)


def test_a_failing_prompt_is_stopped_before_any_batch_and_a_fixed_one_runs(tmp_path: Path, server: LocalServer) -> None:
    docs = _corpus(tmp_path)
    schema = write_schema(tmp_path)
    (tmp_path / "bad.txt").write_text(BAD_PROMPT)
    (tmp_path / "good.txt").write_text(GOOD_PROMPT)
    common = ["--schema", str(schema), "--model", "scripted", "--max-tokens", "200", "--poll-interval", "0.05"]

    code, out = _cli(tmp_path, server, "run", str(docs), "--prompt", str(tmp_path / "bad.txt"), *common)
    assert code == 1, out
    assert "first-pass success: 0/8 (0%)" in out
    assert "projected final success: 0/8 (0%), which is BELOW the gate of 90%" in out
    assert "the reply is not valid JSON" in out  # each failure with its reason
    assert "nothing was submitted" in out and "is stopped" in out
    records = server.records()
    assert [r for r in records if r["batch_id"]] == []  # not one batch request reached the server
    assert len(records) == 8  # the sample's synchronous requests, and nothing else
    with Store(str(tmp_path / "f.db")) as store:
        (job,) = store.list_jobs()
        assert job.state is JobState.STOPPED
        assert store.events(job.job_id, kind="sample.gate")[0]["data"]["passed"] is False

    code, out = _cli(tmp_path, server, "run", str(docs), "--prompt", str(tmp_path / "good.txt"), *common)
    assert code == 0, out
    assert "60 documents, 60 succeeded, 0 failed" in out
    assert any(r["batch_id"] for r in server.records())
    # The sample sent the very requests the batch carried: built alike, down to the custom_id.
    with Store(str(tmp_path / "f.db")) as store:
        good = next(j for j in store.list_jobs() if j.state is JobState.COMPLETED)
        opts = RunOptions.from_config(good.config)
        (sampled,) = [r for r in load_samples(store, opts, last=1)]
        for result in sampled["results"]:
            doc = Document(
                doc_id=result["doc_id"], source=result["source"], text=(docs / f"{result['doc_id']}.txt").read_text()
            )
            stored = store.get_request(good.job_id, result["custom_id"])
            assert stored is not None and stored["request"] == request_for(opts, doc)

    # Both gate runs were kept: --compare shows the two prompt versions on the same eight documents.
    code, out = _cli(tmp_path, server, "sample", str(docs), "--compare")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[0:2] == ["#1", lines[0].split()[1]] and "#2" in lines[0]
    assert next(x for x in lines if x.startswith("first-pass")).split()[1:] == ["0%", "100%"]
    assert next(x for x in lines if x.startswith("gate")).split()[1:] == ["stop", "pass"]
    doc_rows = [x for x in lines if x.startswith("inv-")]
    assert len(doc_rows) == 8 and all("FAIL validation_failed" in x and x.rstrip().endswith("ok") for x in doc_rows)
    assert "sampled different documents" not in out


def test_no_sample_and_small_inputs_skip_the_gate(tmp_path: Path, server: LocalServer) -> None:
    (tmp_path / "bad.txt").write_text(BAD_PROMPT)
    common = ["--prompt", str(tmp_path / "bad.txt"), "--schema", str(write_schema(tmp_path)), "--model", "scripted"]
    common += ["--max-retries", "0", "--poll-interval", "0.05", "--json"]

    small = write_folder(tmp_path / "small", {f"s{i}": f"note {i}" for i in range(50)})
    code, out = _cli(tmp_path, server, "run", str(small), *common)
    assert code == 0, out
    assert json.loads(out)["failed"] == 50  # the prompt is bad, but 50 documents are not sampled first

    code, out = _cli(tmp_path, server, "run", str(_corpus(tmp_path, n=60)), *common, "--no-sample")
    assert code == 0, out
    assert json.loads(out)["failed"] == 60
    assert not [r for r in server.records() if not r["batch_id"]]  # not one synchronous (sample) request


def test_running_a_stopped_job_again_samples_it_again(tmp_path: Path, server: LocalServer) -> None:
    docs = _corpus(tmp_path)
    (tmp_path / "bad.txt").write_text(BAD_PROMPT)
    args = ["run", str(docs), "--prompt", str(tmp_path / "bad.txt"), "--schema", str(write_schema(tmp_path))]
    args += ["--model", "scripted", "--sample-size", "5"]
    assert _cli(tmp_path, server, *args)[0] == 1
    code, out = _cli(tmp_path, server, *args, "--json")
    assert code == 1
    stopped = json.loads(out)
    assert stopped["state"] == "stopped" and stopped["sample"]["first_pass_rate"] == 0.0
    assert len(stopped["sample"]["failures"]) == 5
    records = server.records()
    assert len(records) == 10 and not [r for r in records if r["batch_id"]]
    with Store(str(tmp_path / "f.db")) as store:
        (job,) = store.list_jobs()
        assert job.state is JobState.STOPPED and len(store.events(job.job_id, kind="sample.gate")) == 2


def _thousand(tmp_path: Path) -> list[str]:
    texts = {f"doc-{i:04d}": f"vendor: V{i}\ntotal: {i}" for i in range(1000)}
    # The longest document is always sampled: plant the one failure there.
    texts["doc-0999"] = "vendor: Planted\ntotal: 1\n[[fault:malformed_json:always#planted]]\n" + "More text. " * 20
    docs = write_folder(tmp_path / "docs", texts)
    (tmp_path / "p.txt").write_text(GOOD_PROMPT)
    return ["sample", str(docs), "--prompt", str(tmp_path / "p.txt"), "--schema", str(write_schema(tmp_path))]


def test_freight_sample_reports_failures_projection_and_cost(tmp_path: Path, server: LocalServer) -> None:
    args = _thousand(tmp_path)
    code, out = _cli(tmp_path, server, *args, "--size", "10", "--model", "claude-haiku-4-5", "--json")
    assert code == 0, out  # 90 % meets the default gate of 90 %
    report = json.loads(out)
    assert report["first_pass_rate"] == pytest.approx(0.9) and report["passed"]
    (failure,) = report["failures"]
    assert failure["doc_id"] == "doc-0999" and failure["kind"] == "validation_failed"
    assert failure["message"].startswith("the reply is not valid JSON")
    # 1,000 documents at 90 % -> about 100 retries.
    assert report["retries"]["retries"] == 100 and report["retries"]["total_requests"] == 1100
    per = report["cost"]["per_document"]
    sync = (per["input_tokens"] * 1.00 + per["output_tokens"] * 5.00) / 1e6 * 1100  # claude-haiku-4-5's list price
    assert report["cost"]["sync_usd"] == pytest.approx(sync, rel=0.05)
    assert report["cost"]["batch_usd"] == pytest.approx(report["cost"]["sync_usd"] / 2)
    assert not [r for r in server.records() if r["batch_id"]]


def test_an_unpriced_model_is_said_to_be_unpriced_and_the_gate_exits_non_zero(
    tmp_path: Path, server: LocalServer
) -> None:
    args = _thousand(tmp_path)
    refused, out = _cli(tmp_path, server, *args, "--size", "10", "--model", "mystery-model")
    assert refused == 2 and "no price for model 'mystery-model'" in out and "--allow-unpriced" in out
    assert server.records() == []  # refused before anything was sent
    args += ["--allow-unpriced"]
    code, out = _cli(tmp_path, server, *args, "--size", "10", "--model", "mystery-model", "--min-first-pass", "0.95")
    assert code == 1, out
    assert "first-pass success: 9/10 (90%)" in out
    # Not valid JSON is the prompt's failure: nothing the run does by itself repairs it.
    assert "projected final success: 9/10 (90%), which is BELOW the gate of 95%" in out
    assert "retries the run makes itself" not in out
    assert "about 100 retries" in out
    assert "full run cost: unknown" in out and "mystery-model" in out and "costing unknown" in out
    assert "$0" not in out
    failed = out.splitlines()[out.splitlines().index("failed (1):") + 1 :]
    assert failed[0].startswith("  validation_failed: the reply is not valid JSON") and failed[1].strip() == "doc-0999"


DATED = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        "total": {"type": "number"},
    },
    "required": ["vendor", "date", "total"],
}


def _dated_corpus(tmp_path: Path) -> tuple[Path, Path]:
    texts = {
        f"inv-{i:03d}": f"vendor: Vendor {i}\ndate: 2024-03-{1 + i % 28:02d}\ntotal: {i}.50\nPlease pay soon."
        for i in range(60)
    }
    schema = tmp_path / "dated.json"
    schema.write_text(json.dumps(DATED))
    return write_folder(tmp_path / "dated", texts), schema


def test_a_prompt_whose_replies_break_the_schema_is_stopped(tmp_path: Path, server: LocalServer) -> None:
    """A genuinely bad prompt, no fault marker: its own form line `date: ...` is what the model copies (the scripted
    engine takes a field's value from the first `field: value` line it reads), so every date breaks the schema's
    YYYY-MM-DD pattern. A retry of the same prompt cannot repair that: the gate stops it."""
    docs, schema = _dated_corpus(tmp_path)
    bad = tmp_path / "form.txt"
    bad.write_text("Fill in this form from the invoice.\ndate: the date as the invoice writes it\n\n{document}")
    code, out = _cli(tmp_path, server, "run", str(docs), "--prompt", str(bad), "--schema", str(schema),
                     "--model", "scripted", "--poll-interval", "0.05")  # fmt: skip
    assert code == 1, out
    assert "first-pass success: 0/8 (0%)" in out
    assert "projected final success: 0/8 (0%), which is BELOW the gate of 90%" in out
    assert "the reply does not match the schema at date: 'the date as the invoice writes it' does not match" in out
    assert "nothing was submitted" in out and "the prompt fails on its own" in out
    assert [r for r in server.records() if r["batch_id"]] == []

    good = tmp_path / "good.txt"
    good.write_text("Extract the vendor, the date (YYYY-MM-DD) and the total.\n\n{document}")
    code, out = _cli(tmp_path, server, "run", str(docs), "--prompt", str(good), "--schema", str(schema),
                     "--model", "scripted", "--poll-interval", "0.05")  # fmt: skip
    assert code == 0, out
    assert "60 documents, 60 succeeded, 0 failed" in out


def test_replies_cut_off_at_max_tokens_are_retries_not_a_bad_prompt(tmp_path: Path, server: LocalServer) -> None:
    """A third of the vendors have long names: their replies run past --max-tokens 20 (the scripted engine counts a
    token per 4 characters). The sample's first pass is below 90 %, but each cut-off reply is a retry the run makes
    itself with max_tokens doubled, so the gate lets the job run, says why, and every document ends succeeded."""
    long_name = "Long Named Holdings " * 4
    texts = {
        f"inv-{i:03d}": f"vendor: {long_name if i % 3 == 0 else ''}Vendor {i}\ntotal: {i}.50\nPay soon."
        for i in range(60)
    }
    docs = write_folder(tmp_path / "docs", texts)
    (tmp_path / "good.txt").write_text(GOOD_PROMPT)
    args = ["run", str(docs), "--prompt", str(tmp_path / "good.txt"), "--schema", str(write_schema(tmp_path))]
    args += ["--model", "scripted", "--max-tokens", "20", "--poll-interval", "0.05"]
    code, out = _cli(tmp_path, server, *args)
    assert code == 0, out
    first = next(line for line in out.splitlines() if line.startswith("first-pass success: "))
    ok = int(first.split()[2].split("/")[0])
    assert 0 < ok < 8, out  # the longest document is always sampled, and it is cut off
    assert f"retries the run makes itself (not held against the prompt): raise_max_tokens {8 - ok}" in out
    assert "projected final success: 8/8 (100%), which passes the gate of 90%" in out
    assert "60 documents, 60 succeeded, 0 failed" in out
    assert "retries by fix: raise_max_tokens 20" in out  # every long-named vendor, retried once
