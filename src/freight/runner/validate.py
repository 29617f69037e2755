"""Validation of a reply: JSON parse, then the user's JSON Schema. An error message is what the re-ask quotes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from freight.domain import Succeeded

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


@dataclass(frozen=True)
class Checked:
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_reply(text: str) -> Any:
    m = _FENCE.match(text)
    return json.loads(m.group(1) if m else text)


def check(outcome: Succeeded, schema: dict[str, Any] | None) -> Checked:
    """The reply as the user will get it, or why it is not acceptable."""
    if not outcome.text and outcome.parsed is not None:
        return Checked(value=outcome.parsed)  # a reply with no text but a value: an embedding's vector
    if schema is None:
        return Checked(value=outcome.text)
    value = outcome.parsed
    if value is None:
        try:
            value = parse_reply(outcome.text)
        except json.JSONDecodeError as exc:
            return Checked(error=f"the reply is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    error = best_match(Draft202012Validator(schema).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return Checked(error=f"the reply does not match the schema at {where}: {error.message}")
    return Checked(value=value)
