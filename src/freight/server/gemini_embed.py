"""Gemini's embeddings: the batches `client.batches.create_embeddings` makes (`models/{model}:asyncBatchEmbedContent`,
inline or from a JSONL file of `{"key", "request"}` lines) and the synchronous `:embedContent`.

Each request is an EmbedContentRequest (`content.parts[].text`, `outputDimensionality`, `taskType`); its answer is a
scripted vector (engines/vectors.py) of `outputDimensionality` numbers (the model's own size without it). An input over
the model's 2,048-token limit (tokens counted as ceil(characters / 4)) is an INVALID_ARGUMENT, as the service answers.
Results come back as `{"response": {"embedding": {"values": [...]}}}`: inline under `inlinedEmbedContentResponses`,
in a file with each line's key.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from freight.domain import Errored, ErrorKind, Expired, Succeeded, Usage
from freight.server import gemini_wire
from freight.server.context import Context
from freight.server.engines.scripted import count_tokens
from freight.server.engines.vectors import vector
from freight.server.wire import Answerer, WireError

ENDPOINT = "embeddings"
BATCH_SUFFIX = ":asyncBatchEmbedContent"
DIMENSIONS = {"gemini-embedding-001": 3072, "text-embedding-004": 768}
DEFAULT_DIMENSIONS = 768
MAX_TOKENS = 2048


def text_of(request: Any) -> str:
    content = request.get("content") if isinstance(request, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise WireError("content.parts: must not be empty")
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def answer(
    answerer: Answerer, request: Any, model: str, key: tuple[object, ...], now: float, in_batch: bool = True
) -> Succeeded | Errored | Expired:
    text = text_of(request)
    planted = answerer.planted(text, key, now, in_batch)
    if planted is not None:
        return planted
    model = model.removeprefix("models/")
    dims = request.get("outputDimensionality") or DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    if not isinstance(dims, int) or dims < 1:
        return Errored(kind=ErrorKind.INVALID_REQUEST, message="outputDimensionality: expected a positive integer")
    tokens = count_tokens(text)
    if tokens > MAX_TOKENS:
        # Rendered as Gemini words it: "The input token count (N) exceeds the maximum number of tokens allowed (M)."
        return Errored(
            kind=ErrorKind.CONTEXT_OVERFLOW, message=f"prompt is too long: {tokens} tokens > {MAX_TOKENS} maximum"
        )
    return Succeeded(text="", parsed=vector(model, text, dims), usage=Usage(input_tokens=tokens))


def sync(ctx: Context, body: Any, model: str, many: bool) -> Response:
    """`:embedContent` (one request) or `:batchEmbedContents` (`requests`, what the SDK's `embed_content` sends)."""
    items = body.get("requests") if many and isinstance(body, dict) else [body]
    if not isinstance(items, list) or not items:
        return gemini_wire.invalid("requests: must not be empty")
    vectors: list[Any] = []
    for item in items:
        try:
            outcome = answer(ctx.answerer, item, model, ("sync", ctx.tick()), ctx.now(), in_batch=False)
        except WireError as exc:
            return gemini_wire.invalid(exc.message)
        if isinstance(outcome, Errored):
            status, err = gemini_wire.error_of(outcome)
            return JSONResponse(err, status_code=status)
        assert isinstance(outcome, Succeeded)
        vectors.append({"values": outcome.parsed})
    with ctx.store.write() as conn:
        ctx.store.record(conn, "gemini", None, [None], ctx.now())
    return JSONResponse({"embeddings": vectors} if many else {"embedding": vectors[0]})
