"""The scripted engine: instant, deterministic answers that a test can predict from its own request.

The rule (also in docs/serve.md):
- tokens are counted as ceil(characters / 4), for the prompt (system + every message) and for the reply;
- a prompt over the model's context window is a context-overflow error;
- without JSON asked for, the reply is `echo: ` + the last user message's text;
- with a JSON Schema asked for, the reply is compact JSON satisfying it, taking a property's value from a
  `property: value` line of the prompt when there is one;
- the reply is cut at the first stop sequence it contains (stop_sequence), else at max_tokens * 4 characters when it
  is longer than max_tokens tokens (max_tokens).
"""

from __future__ import annotations

import json
import math
import re

from freight.domain import Errored, ErrorKind, Request, StopReason, Succeeded, Usage
from freight.server.engines.schema_fill import SchemaFiller, prompt_fields

DEFAULT_CONTEXT_WINDOW = 8_192

# Prefix -> window, longest prefix wins: the real models' windows, so overflow tests read like production.
CONTEXT_WINDOWS: dict[str, int] = {
    "claude-": 200_000,
    "gpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-5": 400_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-3.5-turbo": 16_385,
}
_CTX_RE = re.compile(r"^scripted-ctx-(\d+)$")


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


class ScriptedEngine:
    name = "scripted"

    def __init__(self, seed: int = 0) -> None:
        # The replies depend on the request alone; the seed is kept for engines' common factory signature.
        self.seed = seed

    def context_window(self, model: str) -> int:
        m = _CTX_RE.match(model)
        if m:
            return int(m.group(1))
        best = max((p for p in CONTEXT_WINDOWS if model.startswith(p)), key=len, default=None)
        return CONTEXT_WINDOWS[best] if best else DEFAULT_CONTEXT_WINDOW

    def count_tokens(self, request: Request) -> int:
        """What the counting endpoints answer: the same rule `complete` bills the prompt by."""
        return count_tokens(request.prompt_text())

    def complete(self, request: Request) -> Succeeded | Errored:
        prompt_tokens = count_tokens(request.prompt_text())
        window = self.context_window(request.model)
        if prompt_tokens > window:
            return Errored(
                kind=ErrorKind.CONTEXT_OVERFLOW,
                message=f"prompt is too long: {prompt_tokens} tokens > {window} maximum",
            )
        parsed: object = None
        if request.output_schema is not None:
            parsed = SchemaFiller(request.output_schema, prompt_fields(request.prompt_text())).fill()
            text = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False)
        else:
            last_user = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
            text = "echo: " + last_user
        stop = StopReason.END
        cut = [text.index(s) for s in request.stop_sequences if s and s in text]
        if cut:
            text, stop, parsed = text[: min(cut)], StopReason.STOP_SEQUENCE, None
        elif count_tokens(text) > request.max_tokens:
            text, stop, parsed = text[: request.max_tokens * 4], StopReason.MAX_TOKENS, None
        return Succeeded(
            text=text,
            parsed=parsed,
            stop_reason=stop,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=count_tokens(text)),
        )
