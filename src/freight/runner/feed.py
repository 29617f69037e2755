"""results.jsonl while the job runs: each document's line appended as soon as the document is final.

A job of hours should not keep its first answers until its last: after each pass of the loop that finished documents,
their lines (the same lines the final results.jsonl holds) are appended, so `tail -f results.jsonl` follows the run.
When the job ends, results.jsonl is rewritten whole, one line per document in input order. The store stays the only
truth: the feed only reads it (documents final since the last append), and a resumed run starts the file again from
what the store holds.

The feed also remembers where each line it wrote is (its document's place in the input, its offset in the file) and
adds up the report's counts as it goes. When the job ends with every document's line written and nothing about any
document changed after its line was written (`Store.changed_after_final`), the final results.jsonl is these lines put
in input order (`ordered_copy`), not every line built from the store a second time; otherwise the report builds them.
"""

from __future__ import annotations

import json
import os
from array import array
from datetime import datetime
from pathlib import Path
from typing import IO

from freight.domain import ItemState
from freight.runner.report import Tally, priced, stamped_results
from freight.store import Store

FINAL = [s.value for s in ItemState if s.terminal]


class ResultsFeed:
    def __init__(self, store: Store, job_id: str, out: Path) -> None:
        self.store = store
        self.job_id = job_id
        self.path = out / "results.jsonl"
        self._file: IO[bytes] | None = None
        self._since: datetime | None = None
        # Items final at the watermark's instant may be read again by the next `>=` query: the ids already written
        # there are skipped. Only those, not every id written: memory stays flat however large the job.
        self._at_since: set[str] = set()
        self._final = -1
        # Where each written line is: its document's input position, its offset and length in the file, and whether
        # it is a failure. About 21 bytes a document.
        self._seq = array("q")
        self._offset = array("q")
        self._length = array("l")
        self._failed = array("b")
        self._end = 0
        self._known: set[bool] = set()  # whether costs were shown, at each append
        self.tally = Tally()

    def update(self, final: int) -> None:
        """Append the lines of documents that became final; `final` is how many are final now (a pass that finished
        none reads nothing)."""
        if final == self._final:
            return
        self._final = final
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")
        known = priced(self.store, self.job_id)
        self._known.add(known)
        # Streamed: the lines come in input order, not by time, so the new watermark is known only at the end.
        since, at_since = self._since, set(self._at_since)
        lines = stamped_results(self.store, self.job_id, known, states=FINAL, updated_since=self._since)
        for line, spent, updated, seq in lines:
            if line["id"] in self._at_since:
                continue
            data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
            self._file.write(data)
            self._seq.append(seq)
            self._offset.append(self._end)
            self._length.append(len(data))
            self._failed.append(line["status"] != "succeeded")
            self._end += len(data)
            self.tally.add(line, spent)
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

    def ordered_copy(self, store: Store, job_id: str, known: bool, write_to: Path) -> Tally | None:
        """results.jsonl and failures.jsonl in `write_to`, in input order, from the lines written: when they are
        every document's final line (else None, and nothing is written)."""
        self.close()
        counts = store.item_counts(job_id)
        if (
            job_id != self.job_id
            or write_to / "results.jsonl" != self.path
            or self._known != {known}
            or len(self._seq) != sum(counts.values())
            or any(state not in FINAL for state, n in counts.items() if n)
            or store.changed_after_final(job_id)
        ):
            return None
        order = sorted(range(len(self._seq)), key=self._seq.__getitem__)
        results = write_to / "results.jsonl.tmp"
        with self.path.open("rb") as src, results.open("wb") as out, (write_to / "failures.jsonl").open("wb") as bad:
            for i in order:
                src.seek(self._offset[i])
                data = src.read(self._length[i])
                out.write(data)
                if self._failed[i]:
                    bad.write(data)
        os.replace(results, self.path)
        return self.tally
