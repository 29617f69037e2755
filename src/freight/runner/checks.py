"""Pre-flight checks: every mistake that can be seen before the first request is refused here, for free.

A schema that is not a JSON Schema, a prompt without `{document}`, a store URL freight cannot open: each of these,
found late, costs a request per document (or a silent, wrong run). Each check either returns what it read or raises
`UsageError` naming the file, line or flag and what to do. They read files but send nothing and write nothing, so
`freight run --check` is these checks plus `freight.api.prepare` (provider, model, prices) and a read of the input.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from freight.domain import APIS, Api, UsageError
from freight.runner.build import PLACEHOLDER

# A placeholder-looking `{word}`: JSON examples (`{"a": 1}`) never match, since a key is quoted.
_PLACEHOLDER_RE = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_ -]{0,30})\s*\}")
SUPPORTED_SCHEMES = ("postgresql://", "postgres://", "sqlite://")


def read_text(path: Path, flag: str) -> str:
    """The file behind `flag`, as text; a missing, unreadable or non-UTF-8 file is a usage error naming it."""
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: this is a folder; give a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror}") from None


def check_schema(path: Path, flag: str = "--schema") -> dict[str, Any]:
    """The schema file parsed and checked against the metaschema of the draft it declares (`$schema`; the latest
    draft when it declares none)."""
    text = read_text(path, flag)
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: {flag} is not valid JSON ({exc.msg}, column {exc.colno})") from None
    validate_schema(schema, str(path), flag, text)
    assert isinstance(schema, dict)
    return schema


def validate_schema(schema: Any, source: str, flag: str = "--schema", text: str | None = None) -> None:
    """A JSON Schema, valid by its declared draft; `text` (the file's) puts a line number in the message."""
    if not isinstance(schema, dict):
        raise UsageError(f"{source}: {flag} must be a JSON object (a JSON Schema), not {type(schema).__name__}")
    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        line = _line_of(text, exc.path) if text else None
        draft = getattr(validator, "META_SCHEMA", {}).get("$schema", "its draft")
        raise UsageError(
            f"{source}{f':{line}' if line else ''}: {flag} is not a valid JSON Schema at {where}: {exc.message} "
            f"(checked against {draft}); fix the schema and run again"
        ) from None


def _line_of(text: str, path: Any) -> int | None:
    """The line of the last key of a schema error's path, found textually (json keeps no positions): good enough
    to put the cursor near the mistake."""
    keys = [p for p in path if isinstance(p, str)]
    if not keys:
        return None
    pos = 0
    for key in keys:
        found = text.find(f'"{key}"', pos)
        if found < 0:
            return None
        pos = found
    return text.count("\n", 0, pos) + 1


def check_prompt(prompt: str, source: str) -> None:
    """A prompt must say where the document goes. Without `{document}` the literal text would be sent and the
    document appended, which runs - silently wrong - so it is refused, naming a near miss like `{doc}`."""
    if PLACEHOLDER in prompt:
        return
    others = [m.group(0) for m in _PLACEHOLDER_RE.finditer(prompt)]
    line = None
    hint = ""
    if others:
        names = [o.strip("{} ") for o in others]
        close = difflib.get_close_matches("document", names, n=1, cutoff=0.3)
        near = f"{{{close[0]}}}" if close else others[0]
        line = prompt.count("\n", 0, prompt.find(near if near in prompt else others[0])) + 1
        hint = f" It has {near}: did you mean {PLACEHOLDER}?"
    where = f"{source}:{line}" if line else source
    raise UsageError(
        f"{where}: the prompt has no {PLACEHOLDER} placeholder, so freight cannot tell where the document goes.{hint} "
        f"Put {PLACEHOLDER} where the document belongs (it is the only placeholder; other braces are sent as written)"
    )


def check_store_url(db: str, *, explicit: bool, must_exist: bool = False) -> str | None:
    """Refuse a store freight cannot open, before anything is made. Returns a note to show (a new store is about to
    be created), or None."""
    if "://" in db:
        if db.startswith(SUPPORTED_SCHEMES):
            return None
        scheme = db.split("://", 1)[0]
        raise UsageError(
            f"--db {_redact(db)}: freight stores its state in SQLite (a file path) or PostgreSQL "
            f"(postgresql://user@host/db), not {scheme}; give one of those"
        )
    path = Path(db).expanduser()
    if path.is_dir():
        raise UsageError(f"--db {db}: this is a folder; give a file path such as {path / 'freight.db'}")
    if path.exists():
        return None
    if must_exist:
        raise UsageError(f"--db {db}: no store there (no such file); check the path, or `freight jobs --db PATH`")
    if not path.parent.exists():
        if explicit:
            raise UsageError(
                f"--db {db}: the folder {path.parent} does not exist; check the path (or create the folder first)"
            )
        return None  # the default store's folder ($FREIGHT_HOME) is freight's own to create
    return f"creating a new store at {path} (--db named a file that does not exist yet)" if explicit else None


def _redact(url: str) -> str:
    """A URL without its password: a message must never carry a secret."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# The providers whose adapters speak each API besides chat: OpenAI's Batch API and Azure's, which copies it; Gemini's
# embedding batches. Completions and moderations come only from batch-file lines (no `--endpoint` builds them).
_API_PROVIDERS = {
    "responses": ("openai", "azure"),
    "embeddings": ("openai", "azure", "gemini"),
    "completions": ("openai", "azure"),
    "moderations": ("openai", "azure"),
}
_DOCUMENT_APIS: tuple[Api, ...] = ("chat", "responses", "embeddings")


def check_endpoint(
    endpoint: str, provider: str, ready_made: bool, *, prompt: str, system: str | None, schema: Any
) -> Api:
    """`--endpoint chat|responses|embeddings` checked against the rest of the command; the API it names."""
    if endpoint not in _DOCUMENT_APIS:
        more = " (a batch file's lines may name /v1/completions or /v1/moderations)" if endpoint in APIS else ""
        raise UsageError(f"--endpoint {endpoint!r}: use one of {', '.join(_DOCUMENT_APIS)}{more}")
    api: Api = endpoint
    if api == "chat":
        return api
    if ready_made:
        raise UsageError(
            f"--endpoint {api}: a file of batch request lines names its endpoint on each line (its url); "
            "drop --endpoint"
        )
    allowed = _API_PROVIDERS[api]
    if provider not in allowed:
        raise UsageError(
            f"--endpoint {api} runs with --provider {' or --provider '.join(allowed)} "
            f"(--provider {provider} takes --endpoint chat)"
        )
    if api == "embeddings" and (schema is not None or system is not None or prompt != "{document}"):
        raise UsageError(
            "--endpoint embeddings embeds each document as it is: drop --prompt, --system and --schema "
            "(they shape a reply, and an embedding has none)"
        )
    return api


def check_line_apis(apis: set[str], provider: str, source: str) -> None:
    """A batch file's lines may name Responses or embeddings: only a provider with that API can run them."""
    for api in sorted(apis - {"chat"}):
        allowed = _API_PROVIDERS[api]
        if provider not in allowed:
            raise UsageError(
                f"{source}: its lines name /v1/{api}, which runs with --provider {' or --provider '.join(allowed)}, "
                f"not {provider}; name one (and its key)"
            )
