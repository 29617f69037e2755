"""results.jsonl while the job runs: each document's line appended as soon as the document is final.

A job of hours should not keep its first answers until its last: after each pass of the loop that finished documents,
their lines (the same lines the final results.jsonl holds) are appended, so `tail -f results.jsonl` follows the run.
When the job ends, the report rewrites the file whole, one line per document in input order. The store stays the only
truth: the feed only reads it (documents final since the last append), and a resumed run starts the file again from
what the store holds.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import IO

from freight.domain import ItemState
from freight.runner.report import stamped_results
from freight.store import Store

FINAL = [s.value for s in ItemState if s.terminal]


class ResultsFeed:
    def __init__(self, store: Store, job_id: str, out: Path) -> None:
        self.store = store
        self.job_id = job_id
        self.path = out / "results.jsonl"
        self._file: IO[str] | None = None
        self._since: datetime | None = None
        # Items final at the watermark's instant may be read again by the next `>=` query: the ids already written
        # there are skipped. Only those, not every id written: memory stays flat however large the job.
        self._at_since: set[str] = set()
        self._final = -1

    def update(self, final: int) -> None:
        """Append the lines of documents that became final; `final` is how many are final now (a pass that finished
        none reads nothing)."""
        if final == self._final:
            return
        self._final = final
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        # Streamed: the lines come in input order, not by time, so the new watermark is known only at the end.
        since, at_since = self._since, set(self._at_since)
        for line, updated in stamped_results(self.store, self.job_id, states=FINAL, updated_since=self._since):
            if line["id"] in self._at_since:
                continue
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
            if since is None or updated > since:
                since, at_since = updated, {line["id"]}
            elif updated == since:
                at_since.add(line["id"])
        self._file.flush()
        self._since, self._at_since = since, at_since

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
