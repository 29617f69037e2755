"""The runner's pure parts: custom_ids, input reading and its errors, validation, splitting and merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freight.domain import CUSTOM_ID_PATTERN, StopReason, Succeeded
from freight.runner.chunking import merge_outputs, split_text
from freight.runner.ids import base_custom_id, retry_custom_id
from freight.runner.inputs import InputError, read_input
from freight.runner.validate import check

SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}


@pytest.mark.parametrize("doc_id", ["inv-001", "a b", "a/b", "ünïcode", "x" * 200, "", "sub/dir/file name"])
def test_custom_ids_are_valid_stable_and_distinct(doc_id: str) -> None:
    import re

    cid = base_custom_id(doc_id)
    assert re.fullmatch(CUSTOM_ID_PATTERN, cid)
    assert re.fullmatch(CUSTOM_ID_PATTERN, retry_custom_id(cid, 99))
    assert base_custom_id(doc_id) == cid  # the same on every run


def test_ids_that_sanitize_alike_stay_distinct() -> None:
    assert base_custom_id("a b") != base_custom_id("a/b") != base_custom_id("a_b")
    assert base_custom_id("inv-001") == "inv-001"  # a valid id is kept as the user wrote it


def test_folder_jsonl_and_csv_inputs(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt").write_text("bee")
    (tmp_path / "docs" / "a.md").write_text("ay")
    (tmp_path / "docs" / "skip.png").write_bytes(b"\x89PNG")
    assert [(d.doc_id, d.text) for d in read_input(tmp_path / "docs")] == [("a", "ay"), ("b", "bee")]
    (tmp_path / "d.jsonl").write_text('{"id": "x", "text": "one"}\n\n{"id": "y", "text": "two"}\n')
    assert [d.doc_id for d in read_input(tmp_path / "d.jsonl")] == ["x", "y"]
    (tmp_path / "d.csv").write_text('doc_id,body\n1,"multi\nline"\n2,plain\n')
    docs = list(read_input(tmp_path / "d.csv"))
    assert [(d.doc_id, d.text) for d in docs] == [("1", "multi\nline"), ("2", "plain")]


@pytest.mark.parametrize(
    "content,expected",
    [
        (
            '{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n',
            "d.jsonl:2: document id 'x' already appears on line 1",
        ),
        ('{"id": "x", "text": "a"}\n{not json\n', "d.jsonl:2: not valid JSON"),
        ('{"name_": "x", "text": "a"}\n', "d.jsonl:1: no id field"),
        (
            '{"custom_id": "ok", "params": {"model": "m", "messages": []}}\n',
            "(custom_id ok): not a valid batch request",
        ),
        (
            '{"custom_id": "bad id!", "params": {"model": "m", "max_tokens": 5, "messages": '
            '[{"role": "user", "content": "hi"}]}}\n',
            "custom_id 'bad id!' is invalid",
        ),
    ],
)
def test_bad_input_names_file_line_and_custom_id(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        list(read_input(path))
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_ready_made_openai_and_anthropic_request_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [
        {
            "custom_id": "o1",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "max_tokens": 50,
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}},
            },
        },
        {
            "custom_id": "a1",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 60,
                "system": "sys",
                "messages": [{"role": "user", "content": "hi"}],
            },
        },
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    o, a = [d.request for d in read_input(path)]
    assert o is not None and o.system == "be brief" and o.output_schema == SCHEMA and o.max_tokens == 50
    assert a is not None and a.system == "sys" and a.model == "claude-haiku-4-5" and a.messages[0].text() == "hi"


def test_validation_explains_what_is_wrong() -> None:
    assert check(Succeeded(text='```json\n{"total": 3}\n```'), SCHEMA).value == {"total": 3}
    bad_json = check(Succeeded(text='{"total": '), SCHEMA)
    assert bad_json.error is not None and "not valid JSON" in bad_json.error
    wrong = check(Succeeded(text='{"total": "ten"}'), SCHEMA)
    assert wrong.error is not None and "at total" in wrong.error and "'ten' is not of type 'number'" in wrong.error
    assert check(Succeeded(text="free text", stop_reason=StopReason.END), None).value == "free text"


def test_split_respects_the_budget_prefers_paragraphs_and_overlaps() -> None:
    paras = [f"Paragraph {i}. " + "word " * 150 for i in range(8)]
    text = "\n\n".join(paras)
    parts = split_text(text, budget_tokens=400, overlap_tokens=20)
    assert len(parts) > 1
    assert all(len(p) <= 400 * 4 for p in parts)
    for p in paras:  # every paragraph survives whole in some part
        assert any(p in part for part in parts)
    assert parts[1].split("Paragraph")[0].strip()  # part 2 starts with the tail of part 1


def test_a_sentence_longer_than_the_budget_is_cut_not_lost() -> None:
    text = "x" * 5000
    parts = split_text(text, budget_tokens=200, overlap_tokens=0)
    assert "".join(parts).replace("\n", "") == text


def test_merge_concatenates_arrays_keeps_first_scalars_and_lists_conflicts() -> None:
    merged, conflicts = merge_outputs(
        [
            {"vendor": "ACME", "total": None, "items": ["a", "b"], "meta": {"pages": 1}},
            {"vendor": "ACME Corp", "total": 10, "items": ["b", "c"], "meta": {"lang": "en"}},
        ]
    )
    assert merged == {"vendor": "ACME", "total": 10, "items": ["a", "b", "c"], "meta": {"pages": 1, "lang": "en"}}
    assert conflicts == [{"field": "/vendor", "kept": "ACME", "other": "ACME Corp", "part": 1}]
    assert merge_outputs(["one", "two"]) == ("one\n\ntwo", [])


def test_merge_keeps_equal_items_from_different_parts_and_drops_only_the_overlap() -> None:
    line = {"desc": "bolt", "qty": 2}
    # Part 1 ends with a line that part 2 starts with (the overlap), and both parts hold another identical line.
    merged, _ = merge_outputs(
        [
            {"lines": [line, {"desc": "nut", "qty": 1}, {"desc": "washer", "qty": 5}]},
            {"lines": [{"desc": "washer", "qty": 5}, line, {"desc": "screw", "qty": 3}]},
        ]
    )
    assert merged["lines"] == [
        line,
        {"desc": "nut", "qty": 1},
        {"desc": "washer", "qty": 5},
        line,  # the second bolt line is a second line, not a repeat
        {"desc": "screw", "qty": 3},
    ]
    merged, _ = merge_outputs([{"lines": ["a", "a"]}, {"lines": ["b", "a"]}, {"lines": ["a", "c"]}])
    assert merged["lines"] == ["a", "a", "b", "a", "c"]
