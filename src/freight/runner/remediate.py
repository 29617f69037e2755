"""What to do about a failed request: one targeted fix, as a new request whose lineage is recorded — or give up.

| failure                                   | fix                                                                  |
|-------------------------------------------|----------------------------------------------------------------------|
| context overflow                          | `chunk`: split the document under the window, one request per part  |
| truncated at max_tokens                   | `raise_max_tokens`: max_tokens doubled, up to the model's maximum    |
| invalid JSON / schema failure             | `reask`: the reply and the validation error quoted back              |
| ... again after the re-ask                | `few_shot`: worked examples from documents like it that succeeded,   |
|                                           | or `fallback_prompt` when the user gave one                          |
| overloaded, server error, rate limited,   | `resubmit`: the same request again                                   |
| timeout, expired, canceled                |                                                                      |
| invalid request, auth, not found          | none: permanent, reported with the provider's message                |

Every fix costs one attempt of the document's budget (`--max-retries`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from freight.domain import Canceled, Errored, ErrorKind, Expired, Message, Outcome, Request, StopReason, Succeeded
from freight.runner.build import Template
from freight.runner.chunking import chunk_budget, split_for_window
from freight.store.work import Part

REASK_LEAD = "Your previous reply could not be used:"
PERMANENT = {ErrorKind.INVALID_REQUEST, ErrorKind.AUTH, ErrorKind.NOT_FOUND}


@dataclass
class Failure:
    """Why a request's outcome is not a usable output."""

    kind: str  # an ErrorKind value, "truncated", "expired" or "canceled"
    message: str
    raw_type: str = ""
    # (prompt tokens, window) of a context overflow, as the adapter read them from the provider; never parsed here.
    counts: tuple[int, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "raw_type": self.raw_type}


@dataclass
class Remedy:
    retries: list[Request] = field(default_factory=list)
    parts: dict[str, Part] = field(default_factory=dict)
    give_up: Failure | None = None


@dataclass(frozen=True)
class Context:
    """What remediation may draw on besides the failed request."""

    template: Template
    max_retries: int
    context_window: int
    max_output_tokens: int
    document: str | None  # the item's text; None when the input was ready-made requests
    next_id: Callable[[], str]  # a fresh custom_id in this item's lineage
    examples: Callable[[], list[tuple[str, str]]]  # (input excerpt, validated output) of similar successes


def failure_of(outcome: Outcome, validation_error: str | None) -> Failure:
    if isinstance(outcome, Succeeded):
        if outcome.stop_reason is StopReason.MAX_TOKENS:
            return Failure("truncated", "the reply was cut off at max_tokens")
        return Failure(ErrorKind.VALIDATION_FAILED.value, validation_error or "invalid reply")
    if isinstance(outcome, Errored):
        counts = None
        if outcome.prompt_tokens is not None and outcome.context_window is not None:
            counts = (outcome.prompt_tokens, outcome.context_window)
        return Failure(outcome.kind.value, outcome.message, outcome.raw_type, counts)
    if isinstance(outcome, Expired):
        return Failure("expired", "the batch window ended before this request was processed")
    assert isinstance(outcome, Canceled)
    return Failure("canceled", "the batch was canceled before this request was processed")


def remedy(req: Request, part: Part | None, failure: Failure, ctx: Context, outcome: Outcome) -> Remedy:
    if failure.kind in {k.value for k in PERMANENT}:
        return Remedy(give_up=failure)
    attempt = req.attempt + 1
    if attempt > ctx.max_retries:
        return Remedy(
            give_up=Failure(
                failure.kind, f"{failure.message} (gave up after {req.attempt + 1} attempts)", failure.raw_type
            )
        )

    def again(fix: str, **update: Any) -> Remedy:
        new = req.model_copy(
            update={
                "custom_id": ctx.next_id(),
                "attempt": attempt,
                "parent_custom_id": req.custom_id,
                "fix": fix,
                **update,
            }
        )
        return Remedy(retries=[Request.model_validate(new.model_dump())], parts={new.custom_id: part} if part else {})

    if failure.kind == ErrorKind.CONTEXT_OVERFLOW.value:
        return _chunk(req, part, failure, ctx, attempt)
    if failure.kind == "truncated":
        if req.max_tokens >= ctx.max_output_tokens:
            return Remedy(
                give_up=Failure(
                    "truncated",
                    f"the reply was cut off at the model's maximum of {ctx.max_output_tokens} output tokens",
                )
            )
        return again("raise_max_tokens", max_tokens=min(req.max_tokens * 2, ctx.max_output_tokens))
    if failure.kind == ErrorKind.VALIDATION_FAILED.value:
        assert isinstance(outcome, Succeeded)
        if req.fix not in ("reask", "few_shot", "fallback_prompt"):
            return again("reask", messages=[*req.messages, *_reask_turns(outcome.text, failure.message)])
        doc_turn = document_turn(req)
        if ctx.template.fallback_prompt and ctx.document is not None and part is None and req.fix != "fallback_prompt":
            return again(
                "fallback_prompt",
                messages=[
                    Message(role="user", content=ctx.template.render(ctx.document, ctx.template.fallback_prompt))
                ],
            )
        examples = ctx.examples()
        if examples and req.fix != "few_shot":
            shots: list[Message] = []
            for ex_in, ex_out in examples:
                shots += [
                    Message(role="user", content=ctx.template.render(ex_in)),
                    Message(role="assistant", content=ex_out),
                ]
            return again("few_shot", messages=[*shots, doc_turn])
        return again("reask", messages=[*req.messages, *_reask_turns(outcome.text, failure.message)])
    # Transient: the service's failure, not the request's.
    return again("resubmit")


def _reask_turns(reply: str, error: str) -> list[Message]:
    return [
        Message(role="assistant", content=reply or "(empty reply)"),
        Message(role="user", content=f"{REASK_LEAD} {error}. Reply again with only the JSON, matching the schema."),
    ]


def document_turn(req: Request) -> Message:
    """The user turn carrying the document, without any re-ask turns added after it."""
    msgs = list(req.messages)
    while (
        len(msgs) >= 3
        and msgs[-2].role == "assistant"
        and msgs[-1].role == "user"
        and msgs[-1].text().startswith(REASK_LEAD)
    ):
        msgs = msgs[:-2]
    return msgs[-1]


def _chunk(req: Request, part: Part | None, failure: Failure, ctx: Context, attempt: int) -> Remedy:
    if ctx.document is None:
        return Remedy(
            give_up=Failure(
                failure.kind,
                f"{failure.message}; a ready-made request cannot be split: shorten its "
                + (
                    "input (or give the documents as a folder or JSONL with --endpoint embeddings, which splits them)"
                    if req.api == "embeddings"
                    else "prompt"
                ),
                failure.raw_type,
            )
        )
    if part is not None:
        return Remedy(
            give_up=Failure(
                failure.kind,
                f"{failure.message} (part {part[0] + 1} of {part[1]} of a split document is still too long)",
                failure.raw_type,
            )
        )
    prompt_tokens, window = failure.counts or (None, ctx.context_window)
    template_chars = len(ctx.template.render("") + (ctx.template.system or ""))
    budget = chunk_budget(ctx.document, prompt_tokens, window, req.max_tokens, template_chars)
    if budget is None:
        return Remedy(
            give_up=Failure(
                failure.kind,
                f"{failure.message}; the window of {window} tokens leaves no room "
                f"for the document beside max_tokens={req.max_tokens}",
            )
        )
    chunks = split_for_window(ctx.document, budget)
    doc_turn = document_turn(req)
    out = Remedy()
    for i, chunk in enumerate(chunks):
        cid = ctx.next_id()
        content = ctx.template.render(chunk) if doc_turn.text() == ctx.template.render(ctx.document) else chunk
        out.retries.append(
            req.model_copy(
                update={
                    "custom_id": cid,
                    "attempt": attempt,
                    "parent_custom_id": req.custom_id,
                    "fix": "chunk",
                    "messages": [Message(role="user", content=content)],
                }
            )
        )
        out.parts[cid] = (i, len(chunks), req.custom_id)
    out.retries = [Request.model_validate(r.model_dump()) for r in out.retries]
    return out
