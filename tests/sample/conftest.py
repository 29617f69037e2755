"""A deliberately skewed corpus, and freight serve (scripted engine) on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.server.testing import LocalServer

SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
    "required": ["vendor", "total"],
}
GOOD_PROMPT = "Extract the vendor and the total.\n\n{document}"
# The scripted engine answers not-JSON to every request carrying this marker: a prompt that cannot work.
BAD_PROMPT = "Extract the vendor and the total. [[fault:malformed_json:always#badprompt]]\n\n{document}"


def skewed_texts() -> dict[str, str]:
    """200 documents: 190 short, similar notes; 10 outliers - long prose, tables, non-Latin text, and the longest."""
    docs = {f"note-{i:03d}": f"Invoice from Vendor {i}. Total due soon." for i in range(190)}
    for i in range(4):
        docs[f"long-{i}"] = "\n".join(f"Paragraph {j}: the terms of the agreement continue." for j in range(40 + i))
    for i in range(3):
        docs[f"table-{i}"] = "\n".join(f"| item {j} | {j * 3} | {j * 7}.50 |" for j in range(20 + i))
    for i in range(2):
        docs[f"cyrillic-{i}"] = "Счёт от поставщика, оплатить до конца месяца. " * (3 + i)
    docs["longest"] = "\n".join(f"Clause {j}: the longest document of the corpus goes on." for j in range(300))
    return docs


def write_folder(root: Path, texts: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for doc_id, text in texts.items():
        (root / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    return root


def write_schema(root: Path) -> Path:
    path = root / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


@pytest.fixture
def skewed(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "skewed", skewed_texts())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        yield srv
