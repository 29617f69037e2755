"""The forward engine: each request goes to an OpenAI-compatible `/chat/completions` (llama.cpp server, vLLM, SGLang,
Ollama, a hosted endpoint), so any self-hosted model gets a batch API in front of it.

At most `concurrency` requests are in flight upstream at once, whatever the server's worker count. A 429 or 5xx (and a
dropped connection) is retried with exponential backoff, waiting at least what the upstream's retry-after asks; when
the retries run out the last error is the request's result, with its kind, so the batch client's own retry logic
takes over. The upstream API key is read from an environment variable named by the user, never from the command
line, and never appears in a result or a log.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from freight.domain import Errored, ErrorKind, FreightError, Request, StopReason, Succeeded, Usage

DEFAULT_CONCURRENCY = 4
DEFAULT_CONTEXT_WINDOW = 8_192  # what the engine reports before the upstream has said otherwise
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# The error codes/types OpenAI-compatible servers give a prompt over the window: OpenAI and SGLang
# `context_length_exceeded`, llama.cpp server `exceed_context_size_error`.
_OVERFLOW_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
# vLLM answers a plain 400 with no code, so its message is the only signal; it is checked only on a 400.
_OVERFLOW_TEXT_RE = re.compile(r"maximum context length is (\d+) tokens.*?(\d+) (?:input )?tokens", re.S)
_FINISH = {"length": StopReason.MAX_TOKENS, "tool_calls": StopReason.TOOL_USE}


def chat_url(upstream: str) -> str:
    """`/chat/completions` under an OpenAI base URL; a bare host (no path) gets the conventional `/v1`."""
    base = upstream.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FreightError(f"--upstream {upstream!r}: give an http(s) URL, e.g. http://127.0.0.1:8080/v1")
    if not parts.path:
        base += "/v1"
    return base + "/chat/completions"


def body_of(request: Request) -> dict[str, Any]:
    """The chat-completions body for a request: the parameters every OpenAI-compatible server understands."""
    messages: list[dict[str, str]] = [{"role": "system", "content": request.system}] if request.system else []
    messages += [{"role": m.role, "content": m.text()} for m in request.messages]
    # `max_tokens` rather than `max_completion_tokens`: self-hosted servers (llama.cpp, vLLM, Ollama) read the former.
    body: dict[str, Any] = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.output_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": request.output_schema},
        }
    return body


def retry_delay(response: httpx.Response | None, attempt: int, base: float) -> float:
    """Exponential backoff, but never sooner than the upstream asked (retry-after-ms, then retry-after seconds)."""
    backoff: float = base * 2.0**attempt
    if response is None:
        return backoff
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value:
            try:
                return max(backoff, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: rare enough from these servers that backoff serves
    return backoff


def error_of(response: httpx.Response) -> Errored:
    """An upstream error response as freight's error kind, keeping the upstream's code/type and message."""
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    err = payload.get("error") if isinstance(payload, dict) else None
    err = err if isinstance(err, dict) else {}
    code = str(err.get("code") or "")
    raw_type = code or str(err.get("type") or "")
    message = str(err.get("message") or response.text[:500] or f"HTTP {response.status_code}")
    status = response.status_code
    if status == 400 and (code in _OVERFLOW_CODES or err.get("type") in _OVERFLOW_CODES):
        return Errored(kind=ErrorKind.CONTEXT_OVERFLOW, raw_type=raw_type, message=_overflow_message(message, err))
    if status == 400 and (m := _OVERFLOW_TEXT_RE.search(message)):
        return Errored(
            kind=ErrorKind.CONTEXT_OVERFLOW,
            raw_type=raw_type or "context_length_exceeded",
            message=f"prompt is too long: {m.group(2)} tokens > {m.group(1)} maximum",
        )
    if status in (400, 413, 422):
        kind = ErrorKind.INVALID_REQUEST
    elif status in (401, 403):
        kind = ErrorKind.AUTH
    elif status == 404:
        kind = ErrorKind.NOT_FOUND
    elif status == 429:
        kind = ErrorKind.RATE_LIMITED
    elif status in (408, 504):
        kind = ErrorKind.TIMEOUT
    elif status in (503, 529):
        kind = ErrorKind.OVERLOADED
    elif status >= 500:
        kind = ErrorKind.SERVER_ERROR
    else:
        kind = ErrorKind.UNKNOWN
    return Errored(kind=kind, raw_type=raw_type, message=f"upstream answered {status}: {message}")


def _overflow_message(message: str, err: dict[str, Any]) -> str:
    """freight's own "prompt is too long: N tokens > M maximum", from whichever numbers the upstream gave."""
    if isinstance(err.get("n_prompt_tokens"), int) and isinstance(err.get("n_ctx"), int):  # llama.cpp server
        return f"prompt is too long: {err['n_prompt_tokens']} tokens > {err['n_ctx']} maximum"
    m = _OVERFLOW_TEXT_RE.search(message)
    if m:
        return f"prompt is too long: {m.group(2)} tokens > {m.group(1)} maximum"
    return message


def outcome_of(payload: Any, request: Request) -> Succeeded | Errored:
    try:
        choice = payload["choices"][0]
        text = choice["message"].get("content") or ""
        finish = choice.get("finish_reason") or "stop"
    except (KeyError, IndexError, TypeError, AttributeError):
        return Errored(
            kind=ErrorKind.SERVER_ERROR,
            raw_type="bad_response",
            message=f"upstream answered 200 without choices[0].message: {json.dumps(payload)[:300]}",
        )
    stop = _FINISH.get(finish, StopReason.END)
    # vLLM names the stop string that fired (`stop_reason`); others answer "stop" for both end of turn and a stop.
    if (
        finish == "stop"
        and isinstance(choice.get("stop_reason"), str)
        and choice["stop_reason"] in request.stop_sequences
    ):
        stop = StopReason.STOP_SEQUENCE
    parsed: Any = None
    if request.output_schema is not None and stop is StopReason.END:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
    usage = payload.get("usage") or {}
    return Succeeded(
        text=text,
        parsed=parsed,
        stop_reason=stop,
        usage=Usage(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cache_read_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        ),
    )


class ForwardEngine:
    name = "forward"

    def __init__(
        self,
        seed: int = 0,
        upstream: str | None = None,
        upstream_key_env: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 600.0,
        context_window: int = DEFAULT_CONTEXT_WINDOW,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not upstream:
            raise FreightError("the forward engine needs --upstream URL (an OpenAI-compatible base URL, e.g. .../v1)")
        if concurrency < 1:
            raise FreightError(f"--concurrency {concurrency}: use at least 1")
        self.seed = seed
        self.url = chat_url(upstream)
        headers = {}
        if upstream_key_env:
            key = os.environ.get(upstream_key_env)
            if not key:
                raise FreightError(
                    f"--upstream-key-env {upstream_key_env}: that environment variable is not set; export it with "
                    "the upstream's API key, or leave the option out for an upstream without a key"
                )
            headers["Authorization"] = f"Bearer {key}"
        self.max_retries = max_retries
        self.backoff = backoff
        self._window = context_window
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(concurrency)
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def context_window(self, model: str) -> int:
        # The upstream alone knows its window; it enforces it and its overflow error is mapped back.
        return self._window

    def close(self) -> None:
        self._client.close()

    def complete(self, request: Request) -> Succeeded | Errored:
        body = body_of(request)
        last: Errored | None = None
        for attempt in range(self.max_retries + 1):
            response: httpx.Response | None = None
            with self._slots:
                try:
                    response = self._client.post(self.url, json=body)
                except httpx.TimeoutException as exc:
                    last = Errored(kind=ErrorKind.TIMEOUT, raw_type=type(exc).__name__, message=self._failed(exc))
                except httpx.TransportError as exc:
                    last = Errored(kind=ErrorKind.SERVER_ERROR, raw_type=type(exc).__name__, message=self._failed(exc))
            if response is not None:
                if response.status_code == 200:
                    try:
                        return outcome_of(response.json(), request)
                    except ValueError:
                        last = Errored(
                            kind=ErrorKind.SERVER_ERROR,
                            raw_type="bad_response",
                            message=f"upstream answered 200 with a body that is not JSON: {response.text[:200]!r}",
                        )
                else:
                    last = error_of(response)
                    if response.status_code not in _RETRY_STATUSES:
                        return last
            if attempt < self.max_retries:
                # Sleep outside the slot, so a waiting retry does not hold back other requests.
                self._sleep(retry_delay(response, attempt, self.backoff))
        assert last is not None
        return last.model_copy(update={"message": f"{last.message} (after {self.max_retries + 1} attempts)"})

    def _failed(self, exc: Exception) -> str:
        return f"could not reach the upstream {self.url}: {type(exc).__name__}: {exc}"
