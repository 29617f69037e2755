"""Reading a job's input, streamed: documents (a folder, a JSONL or a CSV file) or ready-made batch request lines.

Nothing here holds the whole input: each reader yields one document at a time. Bad input raises `InputError` naming
the file and line (and the custom_id when there is one) and saying what to do.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from freight.domain import FreightError, Message, Request

DOC_SUFFIXES = (".txt", ".md", ".json")
ID_FIELDS = ("id", "doc_id", "document_id", "custom_id", "key", "name")
TEXT_FIELDS = ("text", "document", "content", "body")


class InputError(FreightError):
    def __init__(self, path: Path | str, line: int | None, message: str, custom_id: str | None = None) -> None:
        where = f"{path}:{line}" if line else str(path)
        who = f" (custom_id {custom_id})" if custom_id else ""
        super().__init__(f"{where}{who}: {message}")


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str  # file, or file:line
    text: str
    request: Request | None = None  # set when the input was already a provider batch request


def input_kind(path: Path) -> str:
    """`folder`, `documents` (JSONL / CSV of documents) or `requests` (provider batch request lines)."""
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise InputError(path, None, "no such file or folder")
    if path.suffix.lower() == ".csv":
        return "documents"
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        first = json.loads(line)
                    except json.JSONDecodeError:
                        return "documents"  # the reader reports the bad line with its number
                    is_req = isinstance(first, dict) and "custom_id" in first and ("params" in first or "body" in first)
                    return "requests" if is_req else "documents"
        raise InputError(path, None, "the file is empty")
    raise InputError(
        path,
        None,
        "give a folder of .txt/.md/.json files, a .jsonl or .csv file of documents, or a .jsonl file of batch requests",
    )


def read_input(path: Path, id_field: str | None = None, text_field: str | None = None) -> Iterator[Document]:
    kind = input_kind(path)
    if kind == "folder":
        yield from _folder(path)
    elif kind == "requests":
        yield from _requests(path)
    elif path.suffix.lower() == ".csv":
        yield from _csv(path, id_field, text_field)
    else:
        yield from _jsonl(path, id_field, text_field)


def fingerprint(path: Path) -> str:
    """A digest of the input's names and contents, read in pieces: the same input gives the same job."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _folder(root: Path) -> Iterator[Document]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in DOC_SUFFIXES)
    if not files:
        raise InputError(root, None, f"no {', '.join(DOC_SUFFIXES)} files in this folder")
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        yield Document(doc_id=str(f.relative_to(root).with_suffix("")), source=str(f), text=text)


def _pick(
    row: dict[str, Any], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path, line: int
) -> str:
    names = (wanted,) if wanted else candidates
    for name in names:
        if name in row and row[name] not in (None, ""):
            return str(row[name])
    flag = "--id-field" if what == "id" else "--text-field"
    raise InputError(path, line, f"no {what} field (looked for {', '.join(names)}); name it with {flag}")


def _jsonl(path: Path, id_field: str | None, text_field: str | None) -> Iterator[Document]:
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, n, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(row, dict):
                raise InputError(path, n, "each line must be a JSON object with an id and a text field")
            doc_id = _pick(row, id_field, ID_FIELDS, "id", path, n)
            text = _pick(row, text_field, TEXT_FIELDS, "text", path, n)
            _unique(seen, doc_id, path, n)
            yield Document(doc_id=doc_id, source=f"{path}:{n}", text=text)


def _csv(path: Path, id_field: str | None, text_field: str | None) -> Iterator[Document]:
    csv.field_size_limit(sys.maxsize)  # documents are long; the default 128 KiB limit would cut them
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            n = reader.line_num
            doc_id = _pick(row, id_field, ID_FIELDS, "id", path, n)
            text = _pick(row, text_field, TEXT_FIELDS, "text", path, n)
            _unique(seen, doc_id, path, n)
            yield Document(doc_id=doc_id, source=f"{path}:{n}", text=text)


def _unique(seen: dict[str, int], doc_id: str, path: Path, line: int) -> None:
    if doc_id in seen:
        raise InputError(
            path, line, f"document id {doc_id!r} already appears on line {seen[doc_id]}; ids must be unique"
        )
    seen[doc_id] = line


def _requests(path: Path) -> Iterator[Document]:
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, n, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
            cid = row.get("custom_id") if isinstance(row, dict) else None
            if not isinstance(cid, str):
                raise InputError(path, n, "a batch request line needs a string custom_id")
            _unique(seen, cid, path, n)
            try:
                request = _anthropic_line(row) if "params" in row else _openai_line(row, path, n)
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                raise InputError(path, n, f"not a valid batch request: {_short(exc)}", custom_id=cid) from None
            yield Document(doc_id=cid, source=f"{path}:{n}", text=request.prompt_text(), request=request)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
    return str(exc)


def _anthropic_line(row: dict[str, Any]) -> Request:
    p = row["params"]
    system = p.get("system")
    if isinstance(system, list):
        system = "".join(b.get("text", "") for b in system)
    return Request(
        custom_id=row["custom_id"],
        model=p["model"],
        max_tokens=p["max_tokens"],
        system=system,
        messages=[Message(role=m["role"], content=m["content"]) for m in p["messages"]],
        temperature=p.get("temperature"),
        stop_sequences=p.get("stop_sequences") or [],
        tools=p.get("tools") or [],
        output_schema=((p.get("output_config") or {}).get("format") or {}).get("schema"),
        item_id=row["custom_id"],
    )


def _openai_line(row: dict[str, Any], path: Path, n: int) -> Request:
    url = row.get("url", "/v1/chat/completions")
    if url != "/v1/chat/completions":
        raise InputError(path, n, f"url {url!r} is not supported yet; use /v1/chat/completions", row["custom_id"])
    b = row["body"]
    system = "\n".join(str(m["content"]) for m in b["messages"] if m["role"] in ("system", "developer")) or None
    fmt = b.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    stop = b.get("stop")
    return Request(
        custom_id=row["custom_id"],
        model=b["model"],
        system=system,
        max_tokens=b.get("max_completion_tokens") or b.get("max_tokens") or 1024,
        messages=[
            Message(role=m["role"], content=m["content"])
            for m in b["messages"]
            if m["role"] not in ("system", "developer")
        ],
        temperature=b.get("temperature"),
        stop_sequences=[stop] if isinstance(stop, str) else stop or [],
        tools=b.get("tools") or [],
        output_schema=schema,
        item_id=row["custom_id"],
    )
