"""A corpus with a planted failure of every kind, and a runner pointed at freight serve over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.server.testing import LocalServer

SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}, "lines": {"type": "array"}},
    "required": ["vendor", "total"],
}

# doc id -> (text, what the run must end with)
PLANTED = {
    "plain-1": ("Invoice from ACME. Total 10.", "succeeded"),
    "plain-2": ("Invoice from Globex. Total 20.", "succeeded"),
    "plain-3": ("Invoice from Initech. Total 30.", "succeeded"),
    "overloaded": ("Invoice [[fault:overloaded#ov]] total 1.", "succeeded"),
    "server-error": ("Invoice [[fault:server_error#se]] total 2.", "succeeded"),
    "rate-limited": ("Invoice [[fault:rate_limited#rl]] total 3.", "succeeded"),
    "truncated": ("Invoice [[fault:tokens=400#tr]] total 4.", "succeeded"),
    "bad-json": ("Invoice [[fault:malformed_json#bj]] total 5.", "succeeded"),
    "expired": ("Invoice [[fault:expired#ex]] total 6.", "succeeded"),
    "always-bad-json": ("Invoice [[fault:malformed_json:always#abj]] total 7.", "failed"),
    "invalid": ("Invoice [[fault:invalid_request:always#inv]] total 8.", "failed"),
    "too-long": ("\n\n".join(f"Section {i}. " + "Lorem ipsum dolor sit amet. " * 60 for i in range(6)), "succeeded"),
}


def write_corpus(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for doc_id, (text, _) in PLANTED.items():
        (docs / f"{doc_id}.txt").write_text(text)
    (root / "schema.json").write_text(json.dumps(SCHEMA))
    return docs


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        yield srv
