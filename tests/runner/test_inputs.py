"""Every malformed input, in every format, is refused with its file and line (a usage error, exit 2) - except the one
document of a folder that cannot be decoded, which is read by detection with a note or fails alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freight.domain import ExitCode, UsageError
from freight.runner.inputs import InputError, read_input


def _anthropic(cid: str) -> str:
    params = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    return json.dumps({"custom_id": cid, "params": params})


def _openai(cid: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    return json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body})


CASES = [
    ("docs.csv", 'id,text\n1,"fine"\n2,"an unclosed quote\n3,more\n', r"docs.csv:3: not valid CSV \(unexpected end"),
    ("docs.csv", "id,text\n1,hello\n2,hello, world\n", r"docs.csv:3: 3 fields where the header \(line 1\) has 2"),
    ("docs.csv", "id,text\n1,a\n1,b\n", r"docs.csv:3: document id '1' already appears on line 2"),
    ("docs.csv", "ref,body\n1,a\n", r"docs.csv:2: no id field .*the fields are ref, body\); name it with --id-field"),
    ("docs.csv", "", r"docs.csv: the file is empty"),
    ("docs.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": \n', r"docs.jsonl:2: not valid JSON"),
    ("docs.jsonl", '{"id": "a", "text": {"nested": 1}}\n', r"docs.jsonl:1: the text field 'text' is a dict, not text"),
    ("docs.jsonl", '{"id": "a", "text": "x"}\n[1, 2]\n', r"docs.jsonl:2: each line must be a JSON object"),
    ("batch.jsonl", _anthropic("a") + "\n" + _anthropic("a") + "\n", r"batch.jsonl:2: custom_id 'a' already appears"),
    ("batch.jsonl", _openai("a") + "\n" + _openai("a") + "\n", r"batch.jsonl:2: custom_id 'a' already appears on line"),
    (
        "batch.jsonl",
        _anthropic("a") + '\n{"custom_id": "b", "params": {"model": "m"}}\n',
        r"batch.jsonl:2 \(custom_id b\)",
    ),
    (
        "batch.jsonl",
        _anthropic("a") + '\n{"custom_id": 7, "params": {}}\n',
        r"batch.jsonl:2: .*needs a string custom_id",
    ),
    ("docs.txt", "hello", r"docs.txt: give a folder of"),
]


@pytest.mark.parametrize(("name", "content", "message"), CASES)
def test_a_malformed_input_is_refused_with_its_file_and_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as caught:
        list(read_input(path))
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == ExitCode.USAGE


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"docs.jsonl:2: not UTF-8"):
        list(read_input(path))


def test_a_missing_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope: no such file or folder"):
        list(read_input(tmp_path / "nope"))


def test_one_undecodable_document_in_a_folder_fails_alone_and_another_is_read_by_detection(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a-utf8.txt").write_text("Invoice total 12.00", encoding="utf-8")
    (docs / "b-cp1251.txt").write_bytes("Счёт от поставщика, оплатить до конца месяца.".encode("cp1251"))
    (docs / "c-binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 8)
    (docs / "d-utf8.txt").write_text("Another invoice", encoding="utf-8")
    read = {d.doc_id: d for d in read_input(docs)}
    assert list(read) == ["a-utf8", "b-cp1251", "c-binary", "d-utf8"]  # nothing stopped the rest
    assert read["a-utf8"].note is None and read["a-utf8"].error is None
    assert read["b-cp1251"].text == "Счёт от поставщика, оплатить до конца месяца."
    assert read["b-cp1251"].note is not None and "read as cp1251 (detected)" in read["b-cp1251"].note
    assert read["c-binary"].error is not None and "c-binary.txt: not UTF-8" in read["c-binary"].error
    assert "binary" in read["c-binary"].error and read["c-binary"].text == ""
