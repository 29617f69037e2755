"""OpenAI's batch webhooks, verified by the official SDK (`client.webhooks.unwrap`): what `freight run
--webhook-listen` hands the runner. The adapter declares it (`OpenAIProvider.verify_webhook`, Azure inherits it), so
the runner asks for "the provider's webhook verifier" and never names OpenAI."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache

import openai
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)

from freight.domain import FreightError, WebhookEvent


class InvalidWebhook(FreightError):
    """A delivery that does not verify (a wrong secret, a forged or altered body, a stale timestamp)."""


@lru_cache(maxsize=8)
def _client(secret: str) -> openai.OpenAI:
    # The client only holds the secret here: nothing is sent, so no key is needed.
    return openai.OpenAI(api_key="unused-for-webhooks", webhook_secret=secret, max_retries=0)


def verify_batch_event(body: bytes, headers: Mapping[str, str], secret: str) -> WebhookEvent | None:
    """The batch event in a delivery, verified with `secret`; None for a verified event of another kind
    (`response.completed` ...). Raises `InvalidWebhook` when it does not verify."""
    try:
        event = _client(secret).webhooks.unwrap(body, dict(headers))
    except (openai.InvalidWebhookSignatureError, ValueError, json.JSONDecodeError) as exc:
        raise InvalidWebhook(f"webhook rejected: {exc}") from None
    batch_events = (
        BatchCompletedWebhookEvent,
        BatchFailedWebhookEvent,
        BatchExpiredWebhookEvent,
        BatchCancelledWebhookEvent,
    )
    if not isinstance(event, batch_events):
        return None
    return WebhookEvent(id=event.id, type=event.type, batch_id=event.data.id)
