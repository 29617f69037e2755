"""The engine interface: one provider-neutral request in, one provider-neutral outcome out.

Dialects (Anthropic, OpenAI, ...) translate their wire format to a `domain.Request` and an engine's
`Succeeded` / `Errored` back to theirs; the batch machinery (queue, states, expiry, results files) is shared by every
engine. An engine never sees HTTP and never knows which dialect asked.
"""

from __future__ import annotations

from typing import Protocol

from freight.domain import Errored, Request, Succeeded


class Engine(Protocol):
    name: str

    def context_window(self, model: str) -> int:
        """How many prompt + output tokens the model can hold."""
        ...

    def complete(self, request: Request) -> Succeeded | Errored:
        """Answer one request. Must be safe to call from several worker threads at once.

        A prompt over the context window is `Errored(kind=CONTEXT_OVERFLOW, message="prompt is too long: N tokens >
        M maximum")`; the dialect turns it into its provider's own error shape.
        """
        ...
