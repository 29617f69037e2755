"""Splitting a document that overflowed the context, and merging the parts' outputs back into one.

Split: at paragraph boundaries, then sentence boundaries, and only as a last resort inside a sentence; each part
after the first starts with a small overlap from the end of the one before, so a fact cut at a boundary is seen whole.

Merge (JSON): objects are merged key by key — arrays concatenated in part order, nested objects merged the same way,
and a scalar taken from the first part that has a non-null value; a later part with a different non-null value is a
conflict, listed in the output's metadata.
Text replies are joined with a blank line.

Embeddings (vectors): the parts' vectors are averaged, each weighted by its part's length in tokens (as the provider
counted them), and the mean renormalized to unit length — OpenAI's own cookbook recipe for texts over the input
limit. One vector per document keeps the output a plain matrix; the small overlap between parts counts twice.

Arrays: only what the overlap repeats is dropped — the longest run at the start of a part's array that equals the end
of what came before it. Equal items elsewhere are distinct facts (two identical invoice lines are two lines) and are
all kept.
"""

from __future__ import annotations

import math
import re
from typing import Any

CHARS_PER_TOKEN = 4  # a conservative estimate for budgeting: real tokenizers average 3.5-4.5 characters per token
_PARAS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def split_text(text: str, budget_tokens: int, overlap_tokens: int = 50) -> list[str]:
    budget = max(200, budget_tokens * CHARS_PER_TOKEN)
    overlap = min(overlap_tokens * CHARS_PER_TOKEN, budget // 5)
    pieces: list[str] = []
    for para in _PARAS.split(text):
        if len(para) <= budget:
            pieces.append(para)
            continue
        for sentence in _SENTENCES.split(para):
            pieces.extend(sentence[i : i + budget] for i in range(0, len(sentence), budget))
    parts: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}\n\n{piece}" if current else piece
        if len(candidate) <= budget or not current:
            current = candidate
            continue
        parts.append(current)
        tail = _tail(current, overlap)
        current = f"{tail}\n\n{piece}" if tail and len(tail) + len(piece) + 2 <= budget else piece
    if current:
        parts.append(current)
    return parts


def _tail(text: str, n: int) -> str:
    """The last ~n characters of text, starting at a word boundary."""
    if n <= 0:
        return ""
    tail = text[-n:]
    cut = tail.find(" ")
    return tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail


def merge_outputs(values: list[Any]) -> tuple[Any, list[dict[str, Any]]]:
    """One output from the parts' outputs, and the conflicts found on the way."""
    conflicts: list[dict[str, Any]] = []
    if all(isinstance(v, str) for v in values):
        return "\n\n".join(values), conflicts
    merged: Any = None
    for i, v in enumerate(values):
        merged = v if i == 0 else _merge(merged, v, "", i, conflicts)
    return merged, conflicts


def _merge(a: Any, b: Any, path: str, part: int, conflicts: list[dict[str, Any]]) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = _merge(a[key], value, f"{path}/{key}", part, conflicts) if key in a else value
        return out
    if isinstance(a, list) and isinstance(b, list):
        return a + b[_overlap(a, b) :]
    if a is None:
        return b
    if b is not None and b != a:
        conflicts.append({"field": path or "/", "kept": a, "other": b, "part": part})
    return a


def _overlap(a: list[Any], b: list[Any]) -> int:
    """How many items at the start of `b` repeat the end of `a` (what the parts' shared text produced twice)."""
    for n in range(min(len(a), len(b)), 0, -1):
        if a[-n:] == b[:n]:
            return n
    return 0


def is_vector(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(x, float | int) for x in value)


def average_vectors(vectors: list[list[float]], weights: list[int]) -> list[float]:
    """The weighted mean of equal-length vectors, renormalized to unit length (weights of 0 count as 1)."""
    ws = [max(1, w) for w in weights]
    total = sum(ws)
    mean = [sum(w * v[i] for v, w in zip(vectors, ws, strict=True)) / total for i in range(len(vectors[0]))]
    norm = math.sqrt(sum(x * x for x in mean)) or 1.0
    return [x / norm for x in mean]
