"""OpenAI's endpoints besides chat: Responses, embeddings, completions and moderations, as request and reply bodies.

A batch serves one endpoint (its `endpoint` at create; every line's `url` must match it). Responses and completions
are chat in another shape: their bodies become a domain `Request` answered by the engine like a chat request, and
the reply is rendered back in the endpoint's shape. Embeddings and moderations are answered here (scripted):

- an embedding is a deterministic vector of the requested `dimensions` (the model's default size without it), drawn
  from a generator seeded by a hash of the model and the input text, then unit-normalized — so the same text always
  gives the same vector and different texts give nearly orthogonal ones; an input over the model's 8,192-token limit
  (tokens counted as ceil(characters / 4), as the scripted engine counts) is a 400 like the real service's;
- a moderation flags nothing; its category scores are small deterministic numbers from the same kind of hash.

The answer is kept as a domain `Succeeded`: for embeddings `parsed` holds the vectors and `text` is empty.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

from freight.domain import Errored, ErrorKind, Expired, Message, Request, StopReason, Succeeded, Usage
from freight.server import openai_wire
from freight.server.engines.scripted import count_tokens
from freight.server.engines.vectors import vector
from freight.server.wire import Answerer, WireError

CHAT, RESPONSES, EMBEDDINGS, COMPLETIONS, MODERATIONS = "chat", "responses", "embeddings", "completions", "moderations"
KINDS = {
    "/chat/completions": CHAT,
    "/responses": RESPONSES,
    "/embeddings": EMBEDDINGS,
    "/completions": COMPLETIONS,
    "/moderations": MODERATIONS,
}
# What a batch may name as its endpoint: OpenAI's spelling, and Azure's (the same without /v1).
OPENAI_ENDPOINTS = tuple(f"/v1{path}" for path in KINDS)
AZURE_ENDPOINTS = (*KINDS, *OPENAI_ENDPOINTS)

EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
DEFAULT_EMBEDDING_DIMENSIONS = 1536
EMBEDDING_MAX_TOKENS = 8192
MAX_EMBEDDING_INPUTS = 2048
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)  # fmt: skip


def kind_of(endpoint: str | None) -> str:
    """The endpoint a batch or a route names, as one of the KINDS values (chat when it names none)."""
    if not endpoint:
        return CHAT
    path = endpoint.removeprefix("/v1") if endpoint.startswith("/v1/") else endpoint
    kind = KINDS.get(path)
    if kind is None:
        raise WireError(f"endpoint {endpoint!r} is not one of {', '.join(OPENAI_ENDPOINTS)}", "endpoint")
    return kind


def answer(
    answerer: Answerer, kind: str, body: Any, custom_id: str, key: tuple[object, ...], now: float, in_batch: bool = True
) -> Succeeded | Errored | Expired:
    """One request of `kind` answered as the service would (planted faults first). Raises WireError for a bad body."""
    if not isinstance(body, dict):
        raise WireError("body: expected an object", "body")
    if kind == MODERATIONS:
        body.setdefault("model", "omni-moderation-latest")  # the one parameter with a default model
    if not isinstance(body.get("model"), str):
        raise WireError("you must provide a model parameter", "model")
    if kind == EMBEDDINGS:
        inputs = embedding_inputs(body)
        return answerer.planted("\n".join(inputs), key, now, in_batch) or embed(body, inputs, answerer.engine)
    if kind == MODERATIONS:
        inputs = _strings(body.get("input"), "input")
        return answerer.planted("\n".join(inputs), key, now, in_batch) or moderate(inputs)
    request = to_request(kind, body, custom_id)
    return answerer.answer(request, key, now, in_batch)


def to_request(kind: str, body: dict[str, Any], custom_id: str) -> Request:
    if kind == RESPONSES:
        return responses_request(body, custom_id)
    if kind == COMPLETIONS:
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else "".join(_strings(prompt, "prompt"))
        return _request(body, custom_id, [Message(role="user", content=text)], None, body.get("max_tokens") or 16)
    return openai_wire.to_request(body, custom_id)


def responses_request(body: dict[str, Any], custom_id: str) -> Request:
    raw = body.get("input")
    messages: list[Message] = []
    system: list[str] = [str(body["instructions"])] if body.get("instructions") else []
    if isinstance(raw, str):
        messages.append(Message(role="user", content=raw))
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise WireError(f"input[{i}]: expected an object", f"input[{i}]")
            role, text = item.get("role", "user"), _content_text(item.get("content"), f"input[{i}].content")
            if role in ("system", "developer"):
                system.append(text)
            else:
                messages.append(Message(role="assistant" if role == "assistant" else "user", content=text))
    if not messages:
        raise WireError("input: expected a string or a non-empty array of messages", "input")
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    schema: dict[str, Any] | None = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise WireError("text.format.schema: expected a JSON Schema object", "text.format.schema")
        schema = fmt["schema"]
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        schema = {"type": "object"}
    max_tokens = body.get("max_output_tokens") or openai_wire.DEFAULT_MAX_TOKENS
    return _request(body, custom_id, messages, "\n".join(system) or None, max_tokens, schema)


def _request(
    body: dict[str, Any],
    custom_id: str,
    messages: list[Message],
    system: str | None,
    max_tokens: Any,
    schema: dict[str, Any] | None = None,
) -> Request:
    stop = body.get("stop")
    try:
        return Request(
            custom_id=custom_id,
            model=str(body["model"]),
            messages=messages,
            max_tokens=max_tokens,
            system=system,
            temperature=body.get("temperature"),
            stop_sequences=[stop] if isinstance(stop, str) else (stop or []),
            output_schema=schema,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise WireError(f"invalid request: {str(exc).splitlines()[-1].strip()}") from None


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") in ("input_text", "text")
        )
    raise WireError(f"{where}: expected a string or a list of content parts", where)


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise WireError(f"{where}: expected a string or a non-empty array of strings", where)


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    """The texts to embed; token arrays (lists of ints) are accepted and embedded by their numbers' text."""
    raw = body.get("input")
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        return [" ".join(map(str, raw))]
    if isinstance(raw, list) and raw and all(isinstance(t, list) for t in raw):
        return [" ".join(map(str, t)) for t in raw]
    inputs = _strings(raw, "input")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise WireError(f"input: at most {MAX_EMBEDDING_INPUTS} inputs per request, got {len(inputs)}", "input")
    return inputs


def embed(body: dict[str, Any], inputs: list[str], engine: object = None) -> Succeeded | Errored:
    """Scripted vectors, or the engine's own when it has embeddings (the local engine's model, through llama.cpp)."""
    model = str(body["model"])
    asked = body.get("dimensions")
    dims = asked or EMBEDDING_DIMENSIONS.get(model, DEFAULT_EMBEDDING_DIMENSIONS)
    if not isinstance(dims, int) or dims < 1:
        return Errored(kind=ErrorKind.INVALID_REQUEST, message="dimensions: expected a positive integer")
    own = getattr(engine, "embed", None)
    if callable(own):
        outcome: Succeeded | Errored = own(inputs, asked or None)
        return outcome
    tokens = [count_tokens(t) for t in inputs]
    for n in tokens:
        if n > EMBEDDING_MAX_TOKENS:
            return Errored(
                kind=ErrorKind.CONTEXT_OVERFLOW,
                message=f"prompt is too long: {n} tokens > {EMBEDDING_MAX_TOKENS} maximum",
            )
    vectors = [vector(model, t, dims) for t in inputs]
    return Succeeded(text="", parsed=vectors, usage=Usage(input_tokens=sum(tokens)))


def moderate(inputs: list[str]) -> Succeeded:
    results = []
    for text in inputs:
        digest = hashlib.sha256(text.encode()).digest()
        scores = {c: round(digest[i] / 255 * 0.01, 6) for i, c in enumerate(MODERATION_CATEGORIES)}
        results.append(
            {
                "flagged": False,
                "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
                "category_scores": scores,
                "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
            }
        )
    return Succeeded(text="", parsed=results, usage=Usage(input_tokens=sum(count_tokens(t) for t in inputs)))


# --- replies ------------------------------------------------------------------------------------------------------


def render(kind: str, outcome: Succeeded, body: dict[str, Any], response_id: str, created: int) -> dict[str, Any]:
    """The reply body of a successful request, in its endpoint's shape (what the SDK parses)."""
    model = str(body.get("model", ""))
    suffix = response_id.split("-", 1)[-1].split("_", 1)[-1]
    if kind == RESPONSES:
        return response(outcome, body, f"resp_{suffix}", created)
    if kind == EMBEDDINGS:
        b64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _b64(v) if b64 else v}
            for i, v in enumerate(outcome.parsed or [])
        ]
        n = outcome.usage.input_tokens
        return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": n, "total_tokens": n}}
    if kind == MODERATIONS:
        return {"id": f"modr-{suffix}", "model": model, "results": outcome.parsed or []}
    usage = outcome.usage
    if kind == COMPLETIONS:
        finish = "length" if outcome.stop_reason is StopReason.MAX_TOKENS else "stop"
        return {
            "id": f"cmpl-{suffix}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"text": outcome.text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }
    return openai_wire.completion(outcome, model, response_id, created)


def _b64(v: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()


def response(outcome: Succeeded, body: dict[str, Any], response_id: str, created: int) -> dict[str, Any]:
    """A Responses API `response` object; cut off at max_output_tokens it is `incomplete`, as the real one is."""
    usage = outcome.usage
    truncated = outcome.stop_reason is StopReason.MAX_TOKENS
    status = "incomplete" if truncated else "completed"
    text_cfg = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model", "")),
        "output": [
            {
                "type": "message",
                "id": "msg_" + response_id.removeprefix("resp_"),
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": outcome.text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "temperature": body.get("temperature", 1.0),
        "text": text_cfg,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "metadata": body.get("metadata") or {},
        "usage": {
            "input_tokens": usage.input_tokens,
            # The SDK requires cache_write_tokens here (the Batch object's usage has only cached_tokens).
            "input_tokens_details": {"cached_tokens": usage.cache_read_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
    }
