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
from typing import TYPE_CHECKING, Any

from freight.domain import Errored, ErrorKind, Outcome, Request

if TYPE_CHECKING:
    from freight.runner.tokens import TokenCounter

CHARS_PER_TOKEN = 4  # a conservative estimate for budgeting: real tokenizers average 3.5-4.5 characters per token
# Room kept for what a chat template adds around the text (role markers, special tokens) in the bytes bound.
TEMPLATE_SLACK_TOKENS = 256
_PARAS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def chunk_budget(
    document: str, prompt_tokens: int | None, window: int, max_tokens: int, template_chars: int
) -> int | None:
    """How many tokens of the document one part may carry (in our 4-characters estimate, scaled to the counter's
    tokens when the prompt was counted), or None when the window leaves no room beside max_tokens. The one formula
    for a split after an overflow, before the first submission (pre-flight), and in a dry run's forecast."""
    doc_tokens = math.ceil(len(document) / CHARS_PER_TOKEN)
    # What the prompt costs beyond the document itself (template, system, schema instructions).
    overhead = max(0, prompt_tokens - doc_tokens) if prompt_tokens else math.ceil(template_chars / CHARS_PER_TOKEN)
    budget = int((window - max_tokens - overhead) * 0.8)
    if budget < 100:
        return None
    if prompt_tokens:  # the provider counted: scale our estimate to its tokenizer
        budget = int(budget * doc_tokens / max(1, prompt_tokens - overhead))
    return budget


def split_for_window(document: str, budget: int) -> list[str]:
    """The parts a document is sent as: at least two (the counter said the whole does not fit)."""
    chunks = split_text(document, budget)
    if len(chunks) < 2:  # the estimate says it fits, the provider said it does not: split it anyway
        chunks = split_text(document, max(100, math.ceil(len(document) / CHARS_PER_TOKEN) // 2))
    return chunks


def may_overflow(request: Request, window: int) -> bool:
    """Whether `request` could be over `window`: its UTF-8 bytes bound its tokens (a token is at least one byte), with
    room for what a chat template adds. Only these are worth a call to the counter."""
    bound = len(request.prompt_text().encode()) + TEMPLATE_SLACK_TOKENS
    return bound + request.max_tokens > window


def preflight_overflows(counter: TokenCounter, requests: list[Request]) -> list[tuple[str, Outcome]]:
    """The pre-flight check: each request whose prompt the model's own counter puts over its window (with room for
    max_tokens), as the context-overflow outcome the provider would have answered - recorded without sending it, so
    remediation splits the document before its first submission. The provider's own overflow error stays the safety
    net for what this misses (a counter that is an estimate)."""
    found: list[tuple[str, Outcome]] = []
    for request in requests:
        window = counter.provider.limits.context_for(request.model)
        if not may_overflow(request, window):
            continue
        counted = counter.count(request)
        if counted.input_tokens + request.max_tokens <= window:
            continue
        how = f"{counted.how}, an estimate" if counted.estimated else counted.how
        message = (
            f"prompt is too long: {counted.input_tokens} tokens > {window} maximum with max_tokens "
            f"{request.max_tokens} (counted before sending by {how}; never sent)"
        )
        found.append(
            (
                request.custom_id,
                Errored(
                    kind=ErrorKind.CONTEXT_OVERFLOW,
                    raw_type="preflight",
                    message=message,
                    prompt_tokens=counted.input_tokens,
                    context_window=window,
                ),
            )
        )
    return found


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
