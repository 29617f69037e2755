"""Helpers for driving freight serve with the official SDKs (imported by this folder's tests)."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import openai


def a_request(custom_id: str, text: str, model: str = "claude-scripted", max_tokens: int = 200, **params: Any) -> Any:
    return {
        "custom_id": custom_id,
        "params": {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}], **params},
    }


def o_line(custom_id: str, text: str, model: str = "gpt-4o-mini", **body: Any) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
        }
    )


def wait_anthropic(client: anthropic.Anthropic, batch_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not end within {timeout} s")


OPENAI_FINAL = ("completed", "failed", "expired", "cancelled")


def wait_openai(client: openai.OpenAI, batch_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in OPENAI_FINAL:
            return batch
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not end within {timeout} s")


def upload(client: openai.OpenAI, lines: list[str]) -> str:
    return client.files.create(file=("input.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch").id


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]
