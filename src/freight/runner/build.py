"""The one request builder: every request of a job — first attempt, retry, chunk, sync or batch — is made here.

Template syntax: the prompt file is plain text in which the one placeholder `{document}` is replaced by the document.
Nothing else is interpreted, so JSON examples with braces need no escaping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freight.domain import Api, Message, Request

PLACEHOLDER = "{document}"


@dataclass(frozen=True)
class Template:
    model: str
    max_tokens: int
    prompt: str = PLACEHOLDER
    system: str | None = None
    schema: dict[str, Any] | None = None
    temperature: float | None = None
    fallback_prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    api: Api = "chat"
    params: dict[str, Any] = field(default_factory=dict)  # the API's own parameters (an embedding's dimensions)

    def render(self, document: str, prompt: str | None = None) -> str:
        text = prompt or self.prompt
        if PLACEHOLDER not in text:
            return f"{text}\n\n{document}"
        return text.replace(PLACEHOLDER, document)


def build_request(
    template: Template,
    *,
    custom_id: str,
    item_id: str,
    document: str,
    attempt: int = 0,
    parent: str | None = None,
    fix: str | None = None,
    max_tokens: int | None = None,
    prompt: str | None = None,
    suffix: str | None = None,
    examples: list[tuple[str, str]] | None = None,
) -> Request:
    """A request for one document (or one chunk of it).

    `suffix` is appended to the user's turn (a quoted validation error); `examples` are (input, output) pairs shown
    first as earlier turns of the conversation (few-shot).
    """
    messages: list[Message] = []
    for ex_in, ex_out in examples or []:
        messages.append(Message(role="user", content=template.render(ex_in, prompt)))
        messages.append(Message(role="assistant", content=ex_out))
    user = template.render(document, prompt)
    if suffix:
        user = f"{user}\n\n{suffix}"
    messages.append(Message(role="user", content=user))
    return Request(
        custom_id=custom_id,
        model=template.model,
        messages=messages,
        max_tokens=max_tokens or template.max_tokens,
        system=template.system,
        temperature=template.temperature,
        output_schema=template.schema,
        api=template.api,
        params=template.params,
        item_id=item_id,
        attempt=attempt,
        parent_custom_id=parent,
        fix=fix,
    )
