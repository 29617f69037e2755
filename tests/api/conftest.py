"""freight serve (scripted engine) on loopback, a small corpus, and the CLI driven as a user drives it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.server.testing import LocalServer

SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
    "required": ["vendor", "total"],
}
# Every provider key, unset: what a new user without keys has.
NO_KEYS: dict[str, str | None] = {
    k: None for k in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "AZURE_OPENAI_API_KEY")
}


def write_docs(root: Path, n: int, extra: dict[str, str] | None = None) -> Path:
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (docs / f"inv-{i:02d}.txt").write_text(f"vendor: Vendor {i}\ntotal: {i}.50\n")
    for doc_id, text in (extra or {}).items():
        (docs / f"{doc_id}.txt").write_text(text)
    return docs


def write_schema(root: Path) -> Path:
    path = root / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def freight(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `freight ARGS` run in-process, as the console script runs it."""
    result = CliRunner().invoke(app, list(args), env={**NO_KEYS, **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def batch_records(server: LocalServer) -> list[dict[str, Any]]:
    return [r for r in server.records() if r["batch_id"]]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "serve-a.db", engine="scripted", time_scale=0.0002) as srv:
        yield srv


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "serve-b.db", engine="scripted", time_scale=0.0002) as srv:
        yield srv
