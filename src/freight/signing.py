"""Standard Webhooks signatures, as the official `openai` SDK verifies them (`client.webhooks.unwrap`).

Shared by `freight serve` (batch events) and the runner (`--notify` job events) so one receiver verifies both. Pure:
no I/O, no clock of its own. The body is signed as the exact bytes sent; a receiver must verify the raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from freight.domain import UsageError

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh `whsec_...` secret (24 random bytes, base64), the shape OpenAI hands out."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key: a `whsec_` secret is base64 after its prefix; any other string is used as its UTF-8 bytes."""
    if secret.startswith(PREFIX):
        try:
            return base64.b64decode(secret[len(PREFIX) :], validate=True)
        except binascii.Error:
            raise UsageError(
                "the webhook secret starts with whsec_ but the rest is not base64: pass the secret exactly as it "
                "was given (or any string without the whsec_ prefix)"
            ) from None
    if not secret:
        raise UsageError("the webhook secret is empty: pass a whsec_... secret")
    return secret.encode()


def check_secret(secret: str) -> str:
    """The secret, once it is known to be usable (a user error otherwise, before anything is sent)."""
    secret_bytes(secret)
    return secret


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""
    signed = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one delivery attempt (the timestamp is the attempt's, so a late retry still verifies)."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
        "user-agent": "freight-webhooks",
    }
