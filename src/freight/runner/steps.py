"""Step claims for a job's holder: each batch is claimed before it is polled or ingested, so the other workers of the
store can take the batches this runner is not working on (`store/step_claims.py` says how; `runner/worker.py` is the
worker that uses both sides).

The Runner knows nothing of workers: it is given a `StepClaims` (default None: `freight run`, which claims nothing)
and asks it three things - which of these batches it may step now (`each`), which recorded outcomes are its to
settle (`unsettled`), and whether every ended batch has been taken in (`quiet`), which a job needs before it is
complete when others ingest its batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from freight.store import Store


class StepClaims:
    def __init__(self, store: Store, owner: str, ttl: float) -> None:
        self.store = store
        self.owner = owner  # the worker slot's claim owner, `<worker_id>/<slot>`
        self.ttl = ttl  # the worker's heartbeat renews its claims; they expire this long after its last

    def each(self, rows: Iterable[dict[str, Any]], step: str) -> Iterator[dict[str, Any]]:
        """The batches of `rows` this runner could claim for `step` ("poll" | "ingest"), each as it is now, claimed
        while the caller works on it and released when the caller moves to the next (or stops). A batch another
        worker holds, or one that moved since `rows` was read (polled, ingested), is passed over."""
        for row in rows:
            if row["ingested_at"] is not None or row["provider_batch_id"] is None:
                continue
            fresh = self.store.claim_batch(row["id"], self.owner, self.ttl, step)
            if fresh is None:
                continue
            try:
                if fresh["ingested_at"] is None and (step != "poll" or fresh["state"] == row["state"]):
                    yield fresh
            finally:
                self.store.release_batch(row["id"], self.owner)

    def unsettled(self, job_id: str) -> list[str]:
        return self.store.unsettled_free(job_id, self.owner)

    def quiet(self, job_id: str) -> bool:
        return self.store.batches_to_ingest(job_id) == 0


def claimed(steps: StepClaims | None, rows: list[dict[str, Any]], step: str) -> Iterable[dict[str, Any]]:
    """`rows` as they are without step claims (`freight run`), else those this runner claims, one at a time."""
    return rows if steps is None else steps.each(rows, step)
