"""The GBNF grammar the local engine samples under when a request asks for a JSON Schema: compact JSON.

llama-cpp-python's converter (`llama_cpp.llama_grammar.SchemaConverter`) writes the schema's shape; two choices here
make the replies short, which on a CPU is the same as fast:

- **No free whitespace.** The converter allows a space after every JSON token (`space ::= " "?`). A small model
  takes that freedom (a space after each `:` and `,`, and after values), and every space is one more token to
  generate. The grammar here allows none: `{"vendor":"Acme","total":12.5}`. JSON parsers do not care; the providers'
  structured outputs are compact too.
- **Bounded strings and numbers where the schema sets no bound.** A 135M model that loses the thread keeps writing
  inside a string or a number (digits after the decimal point) until max_tokens, and the run then retries it with
  max_tokens doubled, for the same result. A string is capped at `MAX_STRING` characters and a number at
  `MAX_DIGITS` digits before and after the point unless the schema says otherwise (`maxLength`, a `pattern`, a
  `format`, an `enum`, a `const`). The caps are far above what an extraction field needs; docs/engines.md has the
  measurement behind them.
"""

from __future__ import annotations

import copy
import importlib
import json
from functools import lru_cache
from typing import Any

MAX_STRING = 60  # characters of a string the schema leaves unbounded
MAX_DIGITS = 12  # digits of a number's integral part and of its fraction

# Rules of the converter's output replaced by name. `char` also refuses control characters: the converter lets a raw
# newline into a string, which no JSON parser accepts.
_RULES = {
    "space": '""',
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
}
_BOUNDED_NUMBERS = {
    "integral-part": f"[0] | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}}",
    "decimal-part": f"[0-9]{{1,{MAX_DIGITS}}}",
}
_STRING_KEYS = ("maxLength", "pattern", "format", "enum", "const")


def _bound_strings(node: Any) -> Any:
    """The schema with `maxLength: MAX_STRING` on every string that has no bound of its own."""
    if isinstance(node, list):
        return [_bound_strings(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _bound_strings(v) for k, v in node.items()}
    kind = out.get("type")
    is_string = kind == "string" or (isinstance(kind, list) and "string" in kind and len(kind) == 1)
    if is_string and not any(k in out for k in _STRING_KEYS):
        out["maxLength"] = MAX_STRING
    return out


def compact_gbnf(schema: dict[str, Any], bound: bool = True) -> str:
    """The grammar text for `schema`: its shape, in compact JSON, with unbounded strings and numbers capped."""
    # Untyped upstream code: held as Any so mypy --strict checks this module, not llama-cpp-python's.
    converters: Any = importlib.import_module("llama_cpp.llama_grammar")
    work = _bound_strings(copy.deepcopy(schema)) if bound else copy.deepcopy(schema)
    # Properties in schema order (no prop_order): the order the prompt lists them guides a small model.
    converter = converters.SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    work = converter.resolve_refs(work, "schema")
    converter.visit(work, "")
    text: str = converter.format_grammar()
    rules = {**_RULES, **(_BOUNDED_NUMBERS if bound else {})}
    lines = []
    for line in text.splitlines():
        name = line.split(" ::= ", 1)[0]
        lines.append(f"{name} ::= {rules[name]}" if name in rules else line)
    text = "\n".join(lines)
    return text


@lru_cache(maxsize=64)
def gbnf_for(schema_json: str) -> str:
    # Converting takes a few milliseconds; a job sends the same schema thousands of times.
    schema: dict[str, Any] = json.loads(schema_json)
    return compact_gbnf(schema)
