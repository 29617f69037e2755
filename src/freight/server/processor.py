"""Runs batches through their state machine on a bounded pool of workers, with the emulated service's timing.

Everything it knows is in the store: a tick reads the active batches, moves each one as far as the clock allows,
claims pending requests for free workers, and writes finished answers back in one transaction. Killing the process
loses only answers not yet written; at start `running` rows go back to `pending`, so a batch carries on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import sqlalchemy as sa

from freight.domain import (
    BATCH_TRANSITIONS,
    BatchState,
    Errored,
    ErrorKind,
    Expired,
    Request,
    Succeeded,
    check_transition,
)
from freight.server.config import ServerConfig
from freight.server.store import Store, batches, requests
from freight.server.wire import Answerer, WireError, new_id

Answer = Succeeded | Errored | Expired

log = logging.getLogger("freight.server")

ACTIVE = (BatchState.SUBMITTED, BatchState.IN_PROGRESS, BatchState.FINALIZING, BatchState.CANCELING)
_COUNTER = {"succeeded": "n_succeeded", "errored": "n_errored", "canceled": "n_canceled", "expired": "n_expired"}


_FINISH_ROW = (
    sa.update(requests)
    .where(requests.c.batch_id == sa.bindparam("b_batch"), requests.c.idx == sa.bindparam("b_idx"))
    .values(
        state="done",
        outcome=sa.bindparam("b_outcome"),
        response_id=sa.bindparam("b_response"),
        finished_at=sa.bindparam("b_at"),
    )
)


class Dialect(Protocol):
    name: str
    response_prefix: str

    def to_request(self, params: Any, custom_id: str) -> Request: ...

    def answer(
        self, answerer: Answerer, params: Any, endpoint: str | None, custom_id: str, key: tuple[object, ...], now: float
    ) -> Answer:
        """One request of a batch answered: `to_request` then the answerer, or the endpoint's own engine (OpenAI's
        embeddings, moderations). Raises WireError for a body the service would refuse."""
        ...

    def load(self, batch: sa.RowMapping, now: float) -> bool:
        """Make the batch's requests ready (validate an input file ...). False when the batch failed validation."""
        ...

    def on_end(self, conn: sa.Connection, batch: sa.RowMapping, now: float) -> None:
        """Whatever the dialect produces when a batch ends (OpenAI: its output and error files)."""
        ...


# Called in the transaction that ends a batch, with the state it ended in (the server's webhooks queue their event).
Ended = Callable[[sa.Connection, sa.RowMapping, BatchState, float], None]


def _nothing(_conn: sa.Connection, _batch: sa.RowMapping, _state: BatchState, _now: float) -> None:
    pass


class StaleBatch(Exception):
    """The batch moved on since it was read (a cancel arrived, or the processor advanced it): nothing was changed."""


def set_state(conn: sa.Connection, batch: sa.RowMapping, new: BatchState, **values: Any) -> None:
    """Move a batch from the state it was read in to `new`, or raise `StaleBatch` (rolling back the caller's
    transaction) when it is no longer in that state: a compare-and-set, so the processor acting on a row it read
    before a cancel can never overwrite `canceling` with `in_progress` or `ended`."""
    check_transition(BATCH_TRANSITIONS, BatchState(batch["state"]), new, f"batch {batch['id']}")
    res = conn.execute(
        sa.update(batches)
        .where(batches.c.id == batch["id"], batches.c.state == batch["state"])
        .values(state=new.value, **values)
    )
    if res.rowcount != 1:
        raise StaleBatch(batch["id"])


def request_cancel(store: Store, batch_id: str, now: float, until: float) -> BatchState:
    """Move a batch to canceling unless it has ended meanwhile, deciding on its state as read under the writer lock.
    Returns the state it is in afterwards (a terminal state: it ended before the cancel; nothing changed)."""
    with store.write() as conn:
        batch = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).mappings().one()
        state = BatchState(batch["state"])
        if state.terminal or state is BatchState.CANCELING:
            return state
        set_state(conn, batch, BatchState.CANCELING, cancel_initiated_at=now, cancel_until=until)
        return BatchState.CANCELING


class Processor:
    def __init__(self, config: ServerConfig, store: Store, answerer: Answerer, dialects: dict[str, Dialect]) -> None:
        self.config = config
        self.store = store
        self.answerer = answerer
        self.dialects = dialects
        # An engine that decodes several requests at once (the local engine's slots) is fed that many at once.
        workers = max(config.workers, int(getattr(answerer.engine, "workers", 0)))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="freight-worker")
        self._inflight: Counter[str] = Counter()
        self._pace_keys: dict[str, str] = {}
        self._dialect_by_batch: dict[str, str] = {}
        self._futures: list[Future[tuple[str, int, Succeeded | Errored | Expired, float]]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ended: Ended = _nothing

    def start(self) -> None:
        with self.store.write() as conn:
            conn.execute(sa.update(requests).where(requests.c.state == "running").values(state="pending"))
        self._thread = threading.Thread(target=self._loop, name="freight-processor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        # Answers finished while stopping are written, not dropped: a request a slow engine has answered is never
        # computed again after a restart (only one the engine was still on goes back to pending).
        try:
            self._collect(time.time())
        except Exception:
            log.exception("writing the answers finished while stopping failed")

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        interval = min(0.2, max(0.01, self.config.real(0.5)))
        while not self._stop.is_set():
            try:
                self._tick(time.time())
            except Exception:  # a bad tick must not stop every batch; the next tick retries from the store
                log.exception("processor tick failed")
            self._wake.wait(interval)
            self._wake.clear()

    def _tick(self, now: float) -> None:
        self._collect(now)
        with self.store.read() as conn:
            active = (
                conn.execute(
                    sa.select(batches)
                    .where(batches.c.state.in_([s.value for s in ACTIVE]), batches.c.deleted.is_(False))
                    .order_by(batches.c.seq)
                )
                .mappings()
                .all()
            )
        for batch in active:
            self._advance(batch, now)

    def _advance(self, batch: sa.RowMapping, now: float) -> None:
        # A cancel (or another write) may get there first: the next tick reads the batch as it is now.
        with contextlib.suppress(StaleBatch):
            self._advance_from(batch, now)

    def _advance_from(self, batch: sa.RowMapping, now: float) -> None:
        state, bid = BatchState(batch["state"]), batch["id"]
        idle = self._inflight[bid] == 0
        if state in (BatchState.SUBMITTED, BatchState.IN_PROGRESS) and now >= batch["expires_at"]:
            if idle:
                self._finish_rest(batch, BatchState.EXPIRED, "expired", now)
            return
        if state is BatchState.SUBMITTED and now >= batch["start_at"]:
            if self.dialects[batch["dialect"]].load(batch, now):
                with self.store.write() as conn:
                    set_state(conn, batch, BatchState.IN_PROGRESS, in_progress_at=now)
            else:
                self._failed_validation(batch, now)
            return
        if state is BatchState.IN_PROGRESS:
            done = batch["n_succeeded"] + batch["n_errored"] + batch["n_canceled"] + batch["n_expired"]
            claimed = self._claim(batch, self._paced(batch, now, done))
            if not claimed and idle and done >= batch["total"]:
                until = now + self.config.real(self.config.timings.finalize + self.config.faults.stuck_finalizing)
                if self.config.faults.stalls_finalizing(self._pace_key(batch)):
                    until = max(until, batch["expires_at"])
                with self.store.write() as conn:
                    set_state(conn, batch, BatchState.FINALIZING, finalizing_at=now, finalize_until=until)
            return
        if state is BatchState.FINALIZING and now >= batch["finalize_until"]:
            with self.store.write() as conn:
                set_state(conn, batch, BatchState.ENDED, ended_at=now)
                self.dialects[batch["dialect"]].on_end(conn, batch, now)
                self.ended(conn, batch, BatchState.ENDED, now)
            return
        if state is BatchState.CANCELING and idle and now >= batch["cancel_until"]:
            self._finish_rest(batch, BatchState.CANCELED, "canceled", now)

    def _finish_rest(self, batch: sa.RowMapping, new: BatchState, status: str, now: float) -> None:
        """End a batch early: every request not answered yet gets `status` (expired / canceled)."""
        with self.store.write() as conn:
            res = conn.execute(
                sa.update(requests)
                .where(requests.c.batch_id == batch["id"], requests.c.state != "done")
                .values(state="done", outcome=json.dumps({"status": status}), finished_at=now)
            )
            column = batches.c[_COUNTER[status]]
            set_state(conn, batch, new, ended_at=now, **{column.name: column + res.rowcount})
            self.dialects[batch["dialect"]].on_end(conn, batch, now)
            self.ended(conn, batch, new, now)

    def _failed_validation(self, batch: sa.RowMapping, now: float) -> None:
        """The dialect failed the batch in its own transaction; its end is announced in the next one (a crash in
        between loses that one event: the batch's state itself is safe)."""
        with self.store.write() as conn:
            state = conn.execute(sa.select(batches.c.state).where(batches.c.id == batch["id"])).scalar_one()
            if state == BatchState.FAILED.value:
                self.ended(conn, batch, BatchState.FAILED, now)

    def _paced(self, batch: sa.RowMapping, now: float, done: int) -> int | None:
        """How many more of the batch's requests the latency model lets start now (None: no limit)."""
        faults = self.config.faults
        if faults.latency is None and faults.stall <= 0:
            return None
        key = self._pace_key(batch)
        pace = faults.pace(key, batch["created_at"], self.config.time_scale, self.config.timings.finalize)
        started = done + self._inflight[batch["id"]]
        return max(0, pace.allowed(batch["total"], batch["in_progress_at"] or now, now) - started)

    def _pace_key(self, batch: sa.RowMapping) -> str:
        """What a batch's latency draw is keyed on: its content (first custom_id and size), not its random id, so
        the same work submitted to a fresh server under the same seed meets the same night."""
        key = self._pace_keys.get(batch["id"])
        if key is None:
            with self.store.read() as conn:
                first = conn.execute(
                    sa.select(requests.c.custom_id).where(requests.c.batch_id == batch["id"], requests.c.idx == 0)
                ).scalar()
            key = self._pace_keys[batch["id"]] = f"{first}/{batch['total']}"
        return key

    def _claim(self, batch: sa.RowMapping, paced: int | None = None) -> bool:
        # Enough queued work that workers never wait on a tick, little enough that a cancel takes effect quickly.
        room = max(32, 8 * self.config.workers) - sum(self._inflight.values())
        if room <= 0:
            return True  # busy, not finished
        if paced is not None:
            room = min(room, paced)
            if room <= 0:
                return False  # held back by the latency model; the batch is not finished while requests remain
        with self.store.write() as conn:
            rows = conn.execute(
                sa.select(requests.c.idx, requests.c.custom_id, requests.c.params)
                .where(requests.c.batch_id == batch["id"], requests.c.state == "pending")
                .order_by(requests.c.order_key)
                .limit(room)
            ).all()
            if rows:
                conn.execute(
                    sa.update(requests)
                    .where(requests.c.batch_id == batch["id"], requests.c.idx.in_([r.idx for r in rows]))
                    .values(state="running")
                )
        dialect = self.dialects[batch["dialect"]]
        self._dialect_by_batch[batch["id"]] = batch["dialect"]
        for row in rows:
            self._inflight[batch["id"]] += 1
            fut = self._pool.submit(
                self._work, dialect, batch["id"], batch["endpoint"], row.idx, row.custom_id, row.params
            )
            fut.add_done_callback(lambda _f: self._wake.set())
            self._futures.append(fut)
        return bool(rows)

    def _work(
        self, dialect: Dialect, batch_id: str, endpoint: str | None, idx: int, custom_id: str, params: str
    ) -> tuple[str, int, Succeeded | Errored | Expired, float]:
        time.sleep(self.config.real(self.config.timings.per_request))
        now = time.time()
        try:
            # The engine needs a custom_id in the domain's strict alphabet; OpenAI's may be any string.
            outcome = dialect.answer(self.answerer, json.loads(params), endpoint, f"r{idx}", (batch_id, custom_id), now)
        except WireError as exc:
            outcome = Errored(kind=ErrorKind.INVALID_REQUEST, message=exc.message)
        except Exception as exc:  # an engine that breaks answers like a service's internal error, never a hang
            log.exception("the engine failed on %s/%s", batch_id, custom_id)
            outcome = Errored(kind=ErrorKind.SERVER_ERROR, message=f"engine failure: {type(exc).__name__}")
        return batch_id, idx, outcome, now

    def _collect(self, now: float) -> None:
        # A future canceled at shutdown never ran: its request is still `running`, and goes back to pending.
        finished = [f for f in self._futures if f.done() and not f.cancelled()]
        if not finished:
            return
        done = set(finished)  # a future finishing between the two passes waits for the next tick
        self._futures = [f for f in self._futures if f not in done and not f.cancelled()]
        per_batch: dict[str, Counter[str]] = {}
        rows: list[dict[str, Any]] = []
        for fut in finished:
            batch_id, idx, outcome, at = fut.result()
            counts = per_batch.setdefault(batch_id, Counter())
            counts[_COUNTER[outcome.status]] += 1
            usage = getattr(outcome, "usage", None)
            if usage is not None:
                counts["input_tokens"] += usage.input_tokens
                counts["output_tokens"] += usage.output_tokens
            prefix = self.dialects[self._dialect_by_batch[batch_id]].response_prefix
            rows.append(
                {
                    "b_batch": batch_id,
                    "b_idx": idx,
                    "b_outcome": outcome.model_dump_json(),
                    "b_response": new_id(prefix) if isinstance(outcome, Succeeded) else None,
                    "b_at": at,
                }
            )
        with self.store.write() as conn:
            conn.execute(_FINISH_ROW, rows)
            for batch_id, counts in per_batch.items():
                self._inflight[batch_id] -= sum(counts[c] for c in _COUNTER.values())
                conn.execute(
                    sa.update(batches)
                    .where(batches.c.id == batch_id)
                    .values({batches.c[k]: batches.c[k] + v for k, v in counts.items()})
                )
