"""`--expected`: valid is not right. Field accuracy in `sample`, its gate (`--min-accuracy`), `run`, and the `--compare`
grid of documents x prompt versions - against freight serve's scripted engine, which answers `vendor: X` lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.server.testing import LocalServer

SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
    "required": ["vendor", "total"],
}
DOCS = {"inv-0": ("Acme", 10), "inv-1": ("Globex", 20), "inv-2": ("Initech", 30)}
# inv-0 right on both fields; inv-1 a wrong total; inv-2 a wrong vendor: 4 of 6 fields.
LABELS = {"inv-0": ("Acme", 10), "inv-1": ("Globex", 25), "inv-2": ("Initech Corp", 30)}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        yield srv


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for doc_id, (vendor, total) in DOCS.items():
        (docs / f"{doc_id}.txt").write_text(f"vendor: {vendor}\ntotal: {total}\n")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    labels = [{"id": d, "output": {"vendor": v, "total": t}} for d, (v, t) in LABELS.items()]
    (tmp_path / "expected.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels))
    return docs


def freight(tmp_path: Path, server: LocalServer, *args: str) -> tuple[int, str]:
    env = {"ANTHROPIC_API_KEY": server.api_key, "FREIGHT_HOME": str(tmp_path / "home")}
    common = ["--db", str(tmp_path / "f.db"), "--base-url", server.base_url]
    result = CliRunner().invoke(app, [*args, *common], env=env)
    return result.exit_code, result.output


def test_sample_accuracy_its_gate_and_the_compare_grid(tmp_path: Path, server: LocalServer, corpus: Path) -> None:
    common = ["-s", str(tmp_path / "schema.json"), "-m", "scripted", "--size", "3"]
    expected = ["--expected", str(tmp_path / "expected.jsonl")]
    code, out = freight(
        tmp_path, server, "sample", str(corpus), "--prompt-text", "Extract.\n{document}", *common, *expected
    )
    assert code == 0, out
    # Piped, the sample's progress is a plain line per answer, in the order the answers came.
    assert [ln for ln in out.splitlines() if ln.startswith("sampling 3 documents synchronously: ")] == [
        f"sampling 3 documents synchronously: {i}/3 answered" for i in (1, 2, 3)
    ]
    assert "first-pass success: 3/3 (100%)" in out  # every reply valid ...
    assert "4/6 fields right (67%) over 3 labelled documents" in out  # ... and a third of the fields wrong
    assert "inv-1: wrong total" in out and "inv-2: wrong vendor" in out

    # A prompt that plants a vendor: still 100 % valid, now a third right - and the accuracy gate stops it.
    bad = "Extract.\nvendor: Wrong Co\n{document}"
    code, out = freight(
        tmp_path, server, "sample", str(corpus), "--prompt-text", bad, *common, *expected, "--min-accuracy", "0.5"
    )
    assert code == 1, out
    assert "first-pass success: 3/3 (100%)" in out and "2/6 fields right (33%)" in out

    code, out = freight(tmp_path, server, "sample", str(corpus), "--compare", *expected)
    assert code == 0, out
    rows = {line.strip().split("  ")[0]: line for line in out.splitlines() if line.strip()}
    assert rows["accuracy"].split()[1:] == ["67%", "(4/6)", "33%", "(2/6)"]
    assert rows["vendor"].split()[1:] == ["67%", "(2/3)", "0%", "(0/3)"]
    assert rows["inv-1"].split()[1:] == ["ok", "1/2", "ok", "0/2"]
    assert rows["gate"].split()[1:] == ["pass", "stop"]

    code, out = freight(tmp_path, server, "sample", str(corpus), "--compare", "--runs", "1,9")
    assert code == 2, out
    assert "no sample run #9 of" in out and "its runs are #1, #2" in out


def test_run_reports_accuracy_and_the_gate_says_why(tmp_path: Path, server: LocalServer, corpus: Path) -> None:
    args = ["run", str(corpus), "--prompt-text", "Extract.\n{document}", "-s", str(tmp_path / "schema.json")]
    args += ["-m", "scripted", "--poll-interval", "0.05", "-o", str(tmp_path / "out")]
    code, out = freight(tmp_path, server, *args, "--expected", str(tmp_path / "expected.jsonl"))
    assert code == 0, out
    assert "3 documents, 3 succeeded, 0 failed" in out
    assert "accuracy against" in out and "4/6 fields right (67%)" in out


def test_a_truncating_sample_is_not_held_against_the_prompt(tmp_path: Path, server: LocalServer, corpus: Path) -> None:
    """Replies cut at max_tokens are retries the run makes itself (raise_max_tokens): the gate lets the job through,
    says so, and never tells the user to fix the prompt."""
    for doc_id in DOCS:
        (corpus / f"{doc_id}.txt").write_text(f"vendor: V\ntotal: 1\n[[fault:tokens=500:always#{doc_id}]]\n")
    args = ["run", str(corpus), "--prompt-text", "Extract.\n{document}", "-s", str(tmp_path / "schema.json")]
    code, out = freight(
        tmp_path, server, *args, "-m", "scripted", "--max-tokens", "50", "--sample", "--sample-size", "3",
        "--poll-interval", "0.05", "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, out
    assert "first-pass success: 0/3 (0%)" in out
    assert "retries the run makes itself (not held against the prompt): raise_max_tokens 3" in out
    assert "projected final success: 3/3 (100%), which passes the gate of 90%" in out
    assert "fix the prompt" not in out.lower()
    sent = {r["custom_id"] for r in server.records() if r["batch_id"]}
    assert {"inv-1", "inv-1--r1"} <= sent  # submitted, and retried with max_tokens raised
    assert "raise_max_tokens" in out
