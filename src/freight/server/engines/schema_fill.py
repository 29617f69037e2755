"""A deterministic JSON value that satisfies a JSON Schema, with string and number values taken from the prompt
when the prompt names them (`name: value` on a line), so extraction pipelines can be tested end to end.
"""

from __future__ import annotations

import re
from typing import Any

_FORMAT_SAMPLES = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def prompt_fields(prompt: str) -> dict[str, str]:
    """`key: value` pairs found at the start of lines, keys lower-cased with spaces as underscores."""
    found: dict[str, str] = {}
    for m in re.finditer(r"^\s*([A-Za-z][\w ]{0,40}?)\s*[:=]\s*(.+?)\s*$", prompt, re.MULTILINE):
        found.setdefault(m.group(1).strip().lower().replace(" ", "_"), m.group(2))
    return found


class SchemaFiller:
    def __init__(self, schema: dict[str, Any], fields: dict[str, str]) -> None:
        self.root = schema
        self.fields = fields

    def fill(self) -> Any:
        return self._value(self.root, "value", 0)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node[part]
            return self._resolve(node)
        return schema

    def _value(self, schema: dict[str, Any] | bool, name: str, depth: int) -> Any:
        if not isinstance(schema, dict):
            return None
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._pick_enum(schema["enum"], name)
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options = [self._resolve(o) for o in schema[key] if isinstance(o, dict)]
                non_null = [o for o in options if o.get("type") != "null"] or options
                return self._value(non_null[0], name, depth)
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self._resolve(part))
            return self._value(merged, name, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind in ("integer", "number"):
            return self._number(schema, name, kind == "integer")
        if kind == "boolean":
            return self.fields.get(name, "").lower() in ("true", "yes", "1")
        if kind == "null":
            return None
        return self._string(schema, name)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties", {})
        if not props and depth == 0:
            # JSON without a schema of its own (json_object mode): one predictable field.
            return {"answer": self.fields.get("answer", "scripted")}
        return {key: self._value(sub, key, depth + 1) for key, sub in props.items()}

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        count = max(1, int(schema.get("minItems", 1)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items", {})
        return [self._value(items, name, depth + 1) for _ in range(count)]

    def _number(self, schema: dict[str, Any], name: str, integer: bool) -> int | float:
        raw = self.fields.get(name, "")
        m = re.search(r"-?\d+(?:\.\d+)?", raw.replace(",", ""))
        value: float = float(m.group(0)) if m else float(schema.get("minimum", schema.get("exclusiveMinimum", 0)))
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            value = schema["exclusiveMinimum"] + 1
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        return int(value) if integer else value

    def _string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        if name in self.fields and fmt is None:
            text = self.fields[name]
        elif isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
            return _FORMAT_SAMPLES[fmt]
        else:
            text = f"{name}-value"
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(text) < low:
            text = text + "x" * (low - len(text))
        if high is not None:
            text = text[: int(high)]
        return text

    def _pick_enum(self, options: list[Any], name: str) -> Any:
        wanted = self.fields.get(name)
        for option in options:
            if wanted is not None and str(option).lower() == wanted.lower():
                return option
        return options[0] if options else None
