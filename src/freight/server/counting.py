"""Token counting for every dialect's counting endpoint, with the engine's own tokenizer, recorded apart from inference.

An engine that knows its tokenizer says so with a `count_tokens(request)` method (scripted: its deterministic rule;
local: the model's chat template and tokenizer); any other engine (forward) is answered with the scripted rule, the
same ceil(characters / 4) a caller would estimate. Each call is a row of the `counts` table, never of `records`, so a
test can prove a dry run sent nothing for inference.
"""

from __future__ import annotations

import math

from freight.domain import Request
from freight.server.context import Context


def count(ctx: Context, dialect: str, request: Request) -> int:
    counter = getattr(ctx.answerer.engine, "count_tokens", None)
    tokens = int(counter(request)) if callable(counter) else math.ceil(len(request.prompt_text()) / 4)
    ctx.store.record_count(dialect, request.model, tokens, ctx.now())
    return tokens
