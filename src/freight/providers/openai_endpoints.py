"""OpenAI's endpoints besides chat: the Responses and embeddings bodies built from a domain `Request`, their replies
turned back into domain outcomes, and batch-file lines naming them read into Requests. Pure functions.

A Responses reply is text like a chat completion: `status: incomplete` with `incomplete_details.reason =
max_output_tokens` is a reply cut off at max_tokens (so the runner's `raise_max_tokens` doubles
`max_output_tokens`). An embeddings reply has no text: its `parsed` is the vector (the list of vectors when the
request had several inputs), and the runner keeps that value as the document's output.

The legacy completions endpoint is text like chat (`choices[0].text`; `finish_reason: length` is a truncation, so
`raise_max_tokens` doubles `max_tokens`). A moderation has no text either: its `parsed` is the reply's `results` list
(one entry per input: `flagged`, `categories`, `category_scores`, ...), kept as the output.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Final

from freight.domain import Errored, ErrorKind, Message, Request, StopReason, Succeeded, Usage
from freight.providers.common import parse_json

# The path of each API under the service's root: OpenAI prefixes it with /v1, Azure's batch lines do not.
PATHS: Final = {
    "chat": "/chat/completions",
    "responses": "/responses",
    "embeddings": "/embeddings",
    "completions": "/completions",
    "moderations": "/moderations",
}
API_OF_PATH: Final = {path: api for api, path in PATHS.items()}
EMBEDDING_MAX_TOKENS: Final = 8192  # text-embedding-3-small/-large and ada-002 take at most 8,192 tokens per input


def api_of_url(url: str) -> str | None:
    """The API a batch line's `url` names (/v1/embeddings or Azure's /embeddings), None when freight has none."""
    return API_OF_PATH.get(url.removeprefix("/v1") if url.startswith("/v1/") else url)


# --- bodies -------------------------------------------------------------------------------------------------------


def responses_body(request: Request) -> dict[str, Any]:
    b: dict[str, Any] = {**request.params, "model": request.model, "max_output_tokens": request.max_tokens}
    if request.system is not None:
        b["instructions"] = request.system
    only = request.messages[0] if len(request.messages) == 1 and request.messages[0].role == "user" else None
    b["input"] = only.text() if only else [{"role": m.role, "content": m.text()} for m in request.messages]
    if request.temperature is not None:
        b["temperature"] = request.temperature
    text = dict(request.params.get("text") or {})  # a batch line's other text options (verbosity) are kept
    if request.output_schema is not None:
        # Not `strict`: strict mode rejects many ordinary schemas; the runner validates the reply instead.
        text["format"] = {"type": "json_schema", "name": "freight_output", "schema": request.output_schema}
    if text:
        b["text"] = text
    return b


def embeddings_body(request: Request) -> dict[str, Any]:
    texts = [m.text() for m in request.messages]
    # Floats, not the SDK's default base64: a results file then reads the same whichever client wrote the batch.
    return {
        "encoding_format": "float",
        **request.params,
        "model": request.model,
        "input": texts[0] if len(texts) == 1 else texts,
    }


def completions_body(request: Request) -> dict[str, Any]:
    b: dict[str, Any] = {
        **request.params,
        "model": request.model,
        "prompt": request.messages[-1].text(),
        "max_tokens": request.max_tokens,
    }
    if request.temperature is not None:
        b["temperature"] = request.temperature
    if request.stop_sequences:
        b["stop"] = list(request.stop_sequences)
    return b


def moderations_body(request: Request) -> dict[str, Any]:
    texts = [m.text() for m in request.messages]
    return {**request.params, "model": request.model, "input": texts[0] if len(texts) == 1 else texts}


# --- replies ------------------------------------------------------------------------------------------------------


def outcome_of_response(body: dict[str, Any], wants_json: bool) -> Succeeded | Errored:
    """A Responses API `response` object as a domain outcome."""
    u = body.get("usage") or {}
    cached = int((u.get("input_tokens_details") or {}).get("cached_tokens") or 0)
    usage = Usage(
        input_tokens=max(0, int(u.get("input_tokens") or 0) - cached),
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=cached,
    )
    texts: list[str] = []
    refusal = ""
    for item in body.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif part.get("type") == "refusal":
                    refusal += str(part.get("refusal") or "")
    text = "".join(texts)
    status = body.get("status")
    if refusal or status == "failed":
        err = body.get("error") or {}
        return Errored(
            kind=ErrorKind.INVALID_REQUEST if refusal else ErrorKind.SERVER_ERROR,
            raw_type="refusal" if refusal else str(err.get("code") or "failed"),
            message=refusal or str(err.get("message") or "the response failed"),
            usage=usage,
        )
    reason = (body.get("incomplete_details") or {}).get("reason")
    if status == "incomplete" and reason == "content_filter":
        return Errored(kind=ErrorKind.INVALID_REQUEST, raw_type="content_filter", message=text, usage=usage)
    stop = StopReason.MAX_TOKENS if status == "incomplete" else StopReason.END
    return Succeeded(text=text, parsed=parse_json(text) if wants_json else None, stop_reason=stop, usage=usage)


def outcome_of_embeddings(body: dict[str, Any]) -> Succeeded:
    """An embeddings `list` as a domain outcome: no text; `parsed` the vector, or the vectors of several inputs."""
    data = sorted(body.get("data") or [], key=lambda d: int(d.get("index") or 0))
    vectors = [_floats(d.get("embedding")) for d in data]
    u = body.get("usage") or {}
    usage = Usage(input_tokens=int(u.get("prompt_tokens") or 0))
    return Succeeded(text="", parsed=vectors[0] if len(vectors) == 1 else vectors, usage=usage)


def outcome_of_text_completion(body: dict[str, Any]) -> Succeeded | Errored:
    """A legacy `text_completion` as a domain outcome: the first choice's text."""
    choice = (body.get("choices") or [{}])[0]
    u = body.get("usage") or {}
    usage = Usage(input_tokens=int(u.get("prompt_tokens") or 0), output_tokens=int(u.get("completion_tokens") or 0))
    text = str(choice.get("text") or "")
    finish = choice.get("finish_reason")
    if finish == "content_filter":
        return Errored(kind=ErrorKind.INVALID_REQUEST, raw_type="content_filter", message=text, usage=usage)
    stop = StopReason.MAX_TOKENS if finish == "length" else StopReason.END
    return Succeeded(text=text, stop_reason=stop, usage=usage)


def outcome_of_moderation(body: dict[str, Any]) -> Succeeded:
    """A moderation as a domain outcome: no text; `parsed` the `results` list, one entry per input."""
    return Succeeded(text="", parsed=list(body.get("results") or []))


def _floats(value: Any) -> list[float]:
    if isinstance(value, str):  # encoding_format=base64: little-endian float32
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(x) for x in value or []]


# --- batch-file lines ---------------------------------------------------------------------------------------------


def request_of_line(row: dict[str, Any]) -> Request:
    """An OpenAI batch line (chat, Responses, embeddings, completions or moderations) as the domain Request freight
    sends again as it was.
    Raises KeyError / TypeError / ValueError (pydantic's too) for a line that is not a valid request."""
    url = str(row.get("url", "/v1/chat/completions"))
    api = api_of_url(url)
    if api is None:
        raise ValueError(f"url {url!r} is not one of {', '.join('/v1' + p for p in PATHS.values())}")
    b = row["body"]
    if api in ("embeddings", "moderations"):
        raw = b["input"]
        if not (isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw))):
            raise ValueError("body.input: expected a string or a non-empty array of strings")
        texts = [raw] if isinstance(raw, str) else raw
        params = {k: v for k, v in b.items() if k not in ("model", "input")}
        return Request(
            custom_id=row["custom_id"],
            # A moderation line may leave the model out: the service then uses omni-moderation-latest.
            model=b["model"] if api == "embeddings" else b.get("model", "omni-moderation-latest"),
            api="embeddings" if api == "embeddings" else "moderations",
            messages=[Message(role="user", content=t) for t in texts],
            max_tokens=1,  # an embedding or a moderation writes no tokens; the domain wants a positive number
            params=params,
            item_id=row["custom_id"],
        )
    if api == "completions":
        return _completions_line(row["custom_id"], b)
    if api == "responses":
        return _responses_line(row["custom_id"], b)
    return _chat_line(row["custom_id"], b)


def _responses_line(custom_id: str, b: dict[str, Any]) -> Request:
    raw = b["input"]
    system = [str(b["instructions"])] if b.get("instructions") else []
    messages: list[Message] = []
    if isinstance(raw, str):
        messages.append(Message(role="user", content=raw))
    else:
        for m in raw:
            said = m["content"] if isinstance(m["content"], str) else "".join(p.get("text", "") for p in m["content"])
            if m.get("role") in ("system", "developer"):
                system.append(said)
            else:
                messages.append(Message(role="assistant" if m.get("role") == "assistant" else "user", content=said))
    text: dict[str, Any] = dict(b.get("text") or {})
    fmt = text.pop("format", None) or {}
    if fmt.get("type") not in (None, "text", "json_schema"):
        text["format"] = fmt  # json_object and the like travel as written; only a json_schema becomes the schema
    modeled = ("model", "input", "instructions", "max_output_tokens", "temperature", "text")
    return Request(
        custom_id=custom_id,
        model=b["model"],
        api="responses",
        system="\n".join(system) or None,
        messages=messages,
        max_tokens=b.get("max_output_tokens") or 1024,
        temperature=b.get("temperature"),
        output_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
        params={k: v for k, v in b.items() if k not in modeled} | ({"text": text} if text else {}),
        item_id=custom_id,
    )


def _completions_line(custom_id: str, b: dict[str, Any]) -> Request:
    prompt = b["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ValueError("body.prompt: freight runs a completions line with one text prompt (a string)")
    stop = b.get("stop")
    modeled = ("model", "prompt", "max_tokens", "temperature", "stop")
    return Request(
        custom_id=custom_id,
        model=b["model"],
        api="completions",
        messages=[Message(role="user", content=prompt)],
        max_tokens=b.get("max_tokens") or 16,  # the endpoint's own default
        temperature=b.get("temperature"),
        stop_sequences=[stop] if isinstance(stop, str) else stop or [],
        params={k: v for k, v in b.items() if k not in modeled},
        item_id=custom_id,
    )


def _chat_line(custom_id: str, b: dict[str, Any]) -> Request:
    system = "\n".join(str(m["content"]) for m in b["messages"] if m["role"] in ("system", "developer")) or None
    fmt = b.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    stop = b.get("stop")
    return Request(
        custom_id=custom_id,
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
        item_id=custom_id,
    )
