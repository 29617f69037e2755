"""Pre-flight split: a document the model's own counter puts over its window is chunked before its first submission,
so the provider never receives (nor bills, nor refuses) the overflowing request."""

from __future__ import annotations

from pathlib import Path

import freight
from freight.runner.ids import base_custom_id
from freight.runner.report import item_results
from freight.server.testing import LocalServer
from freight.store import Store

from .conftest import settings, write_corpus

WINDOW = 200_000  # claude-haiku-4-5's, in the adapter's limits and in the scripted engine alike


def test_a_document_over_the_window_is_split_before_it_is_ever_sent(tmp_path: Path, server: LocalServer) -> None:
    docs = write_corpus(tmp_path, 3)
    # ~212,000 tokens by the scripted counter (4 characters a token): over the window on its own.
    paragraph = "A paragraph of a very long contract, clause after clause, with its words. " * 40
    (docs / "huge.txt").write_text("vendor: Huge Corp\ntotal: 9\n\n" + "\n\n".join([paragraph] * 290))
    store = Store(str(tmp_path / "f.db"))

    forecast = freight.estimate(docs, store=store, **settings(server, docs))
    [over] = forecast["over_window"]
    assert over["item_id"] == "huge" and over["input_tokens"] > WINDOW and over["parts"] == 2
    assert forecast["requests"] == 4 + 1

    report = freight.run(docs, store=store, sample=False, poll_interval=0.05, **settings(server, docs))
    assert report.succeeded == 4
    huge = next(line for line in item_results(store, report.job_id) if line["id"] == "huge")
    assert huge["status"] == "succeeded" and huge["fixes"] == ["chunk", "chunk"]
    assert huge["output"]["vendor"] == "Huge Corp"
    received = [r["custom_id"] for r in server.records()]
    assert base_custom_id("huge") not in received  # the whole document was never sent
    assert sum(c.startswith(base_custom_id("huge") + "--") for c in received) == 2
    assert max(c["input_tokens"] for c in server.counts()) > WINDOW  # the counter is what saw it
