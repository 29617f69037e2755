"""Reading a job's input, streamed: documents (a folder, a JSONL or a CSV file) or ready-made batch request lines.

Nothing here holds the whole input: each reader yields one document at a time. Bad input raises `InputError` (a
usage error: exit 2, raised while the input is ingested, so before any request) naming the file and line (and the
custom_id when there is one) and saying what to do. The one exception is a folder: one file of thousands that cannot
be read must not stop the others, so a file that is not UTF-8 is decoded by detection (with a note saying which
encoding was assumed), and one that cannot be decoded at all (binary) becomes a document that fails alone, its
reason recorded.
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

import charset_normalizer
from pydantic import ValidationError

from freight.domain import Message, Request, UsageError
from freight.providers import openai_endpoints

DOC_SUFFIXES = (".txt", ".md", ".json")
ID_FIELDS = ("id", "doc_id", "document_id", "custom_id", "key", "name")
TEXT_FIELDS = ("text", "document", "content", "body")


# The encodings detection may choose. charset-normalizer unrestricted picks exotic code pages (mac_iceland for a
# German cp1252 invoice); these are the ones documents are actually saved in.
LIKELY_ENCODINGS = [
    "utf_16", "utf_32", "cp1252", "cp1250", "cp1251", "iso8859_15", "koi8_r",
    "shift_jis", "euc_jp", "gb18030", "big5", "euc_kr",
]  # fmt: skip


class InputError(UsageError):
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
    note: str | None = None  # something the user should know about how it was read (an encoding guessed)
    error: str | None = None  # set when the document cannot be read: it fails alone, the rest go on


def input_kind(path: Path) -> str:
    """`folder`, `documents` (JSONL / CSV of documents) or `requests` (provider batch request lines)."""
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise InputError(path, None, "no such file or folder")
    if path.suffix.lower() == ".csv":
        return "documents"
    if not path.is_file():
        raise InputError(path, None, "not a regular file or folder")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise InputError(path, None, f"cannot be read ({exc.strerror}); check its permissions") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    try:
                        first = json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError):
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
        doc_id = str(f.relative_to(root).with_suffix(""))
        try:
            data = f.read_bytes()
        except OSError as exc:
            yield Document(doc_id, str(f), "", error=f"{f}: cannot be read ({exc.strerror}); check its permissions")
            continue
        text, note, error = decode(data, f)
        yield Document(doc_id=doc_id, source=str(f), text=text, note=note, error=error)


def decode(data: bytes, path: Path) -> tuple[str, str | None, str | None]:
    """(text, note, error): UTF-8 as is; another encoding by detection, with a note; binary data as an error."""
    try:
        return data.decode("utf-8-sig"), None, None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 ({exc.reason} at byte {exc.start})"
    if b"\x00" not in data[:8192] or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        best = charset_normalizer.from_bytes(data, cp_isolation=LIKELY_ENCODINGS).best()
        if best is not None:
            note = f"{path}: {reason}; read as {best.encoding} (detected) - save it as UTF-8 if that is wrong"
            return str(best), note, None
    return "", None, f"{path}: {reason}, and no text encoding fits: is it a binary file? it was not sent"


def _pick(
    row: dict[str, Any], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path, line: int
) -> str:
    names = (wanted,) if wanted else candidates
    flag = "--id-field" if what == "id" else "--text-field"
    for name in names:
        if name in row and row[name] not in (None, ""):
            value = row[name]
            if isinstance(value, dict | list | bool):
                raise InputError(
                    path, line, f"the {what} field {name!r} is a {type(value).__name__}, not text; "
                    f"name the right field with {flag}"
                )  # fmt: skip
            return str(value)
    present = ", ".join(k for k in row if k is not None) or "none"
    raise InputError(
        path, line, f"no {what} field (looked for {', '.join(names)}; the fields are {present}); name it with {flag}"
    )


def _jsonl(path: Path, id_field: str | None, text_field: str | None) -> Iterator[Document]:
    seen: dict[str, int] = {}
    for n, row in _json_lines(path):
        if not isinstance(row, dict):
            raise InputError(path, n, "each line must be a JSON object with an id and a text field")
        doc_id = _pick(row, id_field, ID_FIELDS, "id", path, n)
        text = _pick(row, text_field, TEXT_FIELDS, "text", path, n)
        _unique(seen, doc_id, path, n)
        yield Document(doc_id=doc_id, source=f"{path}:{n}", text=text)


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; a line that is not UTF-8 or not JSON is refused."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(path, n, f"not UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, n, f"not valid JSON ({exc.msg}, column {exc.colno})") from None


def _csv(path: Path, id_field: str | None, text_field: str | None) -> Iterator[Document]:
    csv.field_size_limit(sys.maxsize)  # documents are long; the default 128 KiB limit would cut them
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        # strict: an unclosed quote is an error, not a field that silently swallows the rest of the file
        reader = csv.reader(f, strict=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                raise InputError(path, None, "the file is empty; a CSV of documents needs a header line (id,text)")
            width = len(header)
            while True:
                start = reader.line_num + 1
                values = next(reader, None)
                if values is None:
                    return
                n = start
                if not any(v.strip() for v in values):
                    continue
                if len(values) != width:
                    raise InputError(
                        path, n, f"{len(values)} fields where the header (line 1) has {width}; "
                        "quote a field that contains a comma or a line break (\"like, this\")"
                    )  # fmt: skip
                row = dict(zip(header, values, strict=True))
                doc_id = _pick(row, id_field, ID_FIELDS, "id", path, n)
                text = _pick(row, text_field, TEXT_FIELDS, "text", path, n)
                _unique(seen, doc_id, path, n)
                yield Document(doc_id=doc_id, source=f"{path}:{n}", text=text)
        except csv.Error as exc:
            raise InputError(path, start, f"not valid CSV ({exc}); check the quotes from this line on") from None
        except UnicodeDecodeError as exc:
            raise InputError(path, reader.line_num + 1, f"not UTF-8 ({exc.reason}); save it as UTF-8") from None


def _unique(seen: dict[str, int], doc_id: str, path: Path, line: int, what: str = "document id") -> None:
    if doc_id in seen:
        raise InputError(path, line, f"{what} {doc_id!r} already appears on line {seen[doc_id]}; each must be unique")
    seen[doc_id] = line


def _requests(path: Path) -> Iterator[Document]:
    seen: dict[str, int] = {}
    for n, row in _json_lines(path):
        cid = row.get("custom_id") if isinstance(row, dict) else None
        if not isinstance(cid, str):
            raise InputError(path, n, "a batch request line needs a string custom_id")
        _unique(seen, cid, path, n, "custom_id")
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
    try:
        return openai_endpoints.request_of_line(row)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise InputError(path, n, f"{exc}; freight runs these three", row["custom_id"]) from None
