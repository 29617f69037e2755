"""Accuracy against labels (runner/accuracy.py): the shipped expected.jsonl loads, and fields are scored as a reader
would score them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freight.domain import UsageError
from freight.runner.accuracy import load_labels, score

EXPECTED = Path(__file__).resolve().parents[2] / "examples" / "invoices" / "expected.jsonl"


def test_the_shipped_labels_load_and_match_folder_ids() -> None:
    labels = load_labels(str(EXPECTED), EXPECTED.read_text(encoding="utf-8"))
    assert len(labels.by_id) == 30
    first = json.loads(EXPECTED.read_text(encoding="utf-8").splitlines()[0])
    assert labels.get("invoice-01") == {k: v for k, v in first.items() if k != "file"}


def test_fields_are_scored_forgiving_case_spacing_and_number_format_only() -> None:
    labels = load_labels(
        "exp.jsonl", '{"id": "a", "output": {"vendor": "Acme Ltd", "total": 12.5, "date": "2024-01-02"}}'
    )
    right = {"vendor": "ACME  ltd", "total": "12.50", "date": "2024-01-02"}
    acc = score([("a", right)], labels)
    assert acc["correct"] == 3 and acc["accuracy"] == 1.0
    wrong = {"vendor": "Acme Ltd", "total": 12.5, "date": "02/01/2024"}
    acc = score([("a", wrong), ("b", {"vendor": "x"})], labels)
    assert acc["per_field"]["date"] == {"correct": 0, "total": 1, "accuracy": 0.0}
    assert acc["documents"][0]["wrong"] == ["date"] and acc["unlabelled"] == ["b"]
    failed = score([("a", None)], labels)
    assert failed["correct"] == 0 and failed["fields"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "a", "output": {"x": 1}}\n{"id": "a", "output": {"x": 2}}', r"exp.jsonl:2: 'a' is labelled twice"),
        ('{"output": {"x": 1}}', r"exp.jsonl:1: no document id"),
        ('{"id": "a", "output": {"x": 1}}\nnot json', r"exp.jsonl:2: --expected is not valid JSON"),
    ],
)
def test_a_bad_labels_file_names_its_line(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_labels("exp.jsonl", text)
