"""A corpus of invoices of varied length, and `freight serve --engine scripted` to run it against."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.server.testing import LocalServer

SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
    "required": ["vendor", "total"],
}
PROMPT = "Extract the vendor and the total of this invoice.\n\n{document}\n"
MODEL = "claude-haiku-4-5"


def write_corpus(root: Path, n: int, seed: int = 1) -> Path:
    """`n` invoices from 1 to 60 lines long; the vendor's name varies in length, so the replies do too."""
    rng = random.Random(seed)
    docs = root / "docs"
    docs.mkdir(parents=True)
    for i in range(n):
        vendor = "Vendor" + "x" * rng.randint(0, 12)
        body = "A line of the invoice, with its words. " * rng.randint(1, 60)
        (docs / f"inv-{i:04d}.txt").write_text(f"vendor: {vendor}\ntotal: {i}\n{body}")
    return docs


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        yield srv


def settings(server: LocalServer, docs: Path, **extra: object) -> dict[str, object]:
    """What `freight.run` / `freight.estimate` take for this corpus on this server."""
    return {
        "prompt": PROMPT,
        "schema": json.loads(json.dumps(SCHEMA)),
        "provider": "anthropic",
        "model": MODEL,
        "base_url": server.base_url,
        "api_key": server.api_key,
        "max_tokens": 200,
        "out": str(docs.parent / "out"),
        **extra,
    }
