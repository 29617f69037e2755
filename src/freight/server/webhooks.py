"""Batch webhooks from `freight serve`: when an OpenAI or Azure batch ends, a signed event is POSTed to each
`--webhook URL`, as OpenAI does (`batch.completed`, `batch.failed`, `batch.expired`, `batch.cancelled`).

The idea: an outbox. `enqueue` writes one `webhook_deliveries` row per URL in the very transaction that ends the
batch, so a server killed right after a batch ends still sends its event once it is back. A `Sender` thread POSTs the
rows that are due, signs each attempt with Standard Webhooks headers (`freight.signing`: the `webhook-id` is the event
id, the same on every retry; the timestamp is the attempt's), records every attempt in `webhook_attempts`, and on
anything but a 2xx tries again later with a doubling backoff, up to `webhook_attempts` times. Delivery is at least
once: a receiver must be idempotent on `webhook-id`, as with OpenAI's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import httpx
import sqlalchemy as sa

from freight import signing
from freight.domain import BatchState
from freight.server.config import ServerConfig
from freight.server.store import Store, webhook_attempts, webhook_deliveries
from freight.server.wire import new_id

log = logging.getLogger("freight.server")

EVENT_TYPES = {
    BatchState.ENDED: "batch.completed",
    BatchState.FAILED: "batch.failed",
    BatchState.EXPIRED: "batch.expired",
    BatchState.CANCELED: "batch.cancelled",
}
DIALECTS = ("openai", "azure")  # Anthropic's and Gemini's batch APIs have no webhooks: they are polled
MAX_BACKOFF = 300.0
_PAGE = 50


def event_body(event_id: str, event_type: str, batch_id: str, created_at: float) -> bytes:
    """The event as OpenAI sends it: `data` carries only the batch id; the receiver retrieves the batch."""
    event = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": int(created_at),
        "data": {"id": batch_id},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def enqueue(
    conn: sa.Connection, config: ServerConfig, batch_id: str, dialect: str, state: BatchState, now: float
) -> int:
    """In the caller's transaction (the one that ended the batch): one pending delivery per webhook URL. Returns how
    many were queued (none for a dialect without webhooks, a state that is not an end, or a server without URLs)."""
    event_type = EVENT_TYPES.get(state)
    if not config.webhooks or dialect not in DIALECTS or event_type is None:
        return 0
    event_id = new_id("evt_")
    body = event_body(event_id, event_type, batch_id, now)
    rows = [
        {"event_id": event_id, "url": url, "type": event_type, "batch_id": batch_id, "body": body, "state": "pending",
         "attempts": 0, "next_at": now, "created_at": now}
        for url in config.webhooks
    ]  # fmt: skip
    # A batch ends once; OR IGNORE keeps a replayed end (a retried transaction) from queueing a second event.
    conn.execute(sa.insert(webhook_deliveries).prefix_with("OR IGNORE"), rows)
    return len(rows)


def backoff(config: ServerConfig, attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from `webhook_backoff`, capped."""
    return float(min(MAX_BACKOFF, config.webhook_backoff * 2 ** (attempts - 1)))


class Sender:
    """Delivers due rows of the outbox, one thread, one HTTP client. Everything it knows is in the store."""

    def __init__(self, config: ServerConfig, store: Store, client: httpx.Client | None = None) -> None:
        self.config = config
        self.store = store
        self._client = client or httpx.Client(timeout=10.0)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.config.webhooks:
            return
        # A restarted server tries what is still pending at once: whoever restarts it is likely watching.
        with self.store.write() as conn:
            conn.execute(
                sa.update(webhook_deliveries).where(webhook_deliveries.c.state == "pending").values(next_at=time.time())
            )
        self._thread = threading.Thread(target=self._loop, name="freight-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._client.close()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.deliver_due(time.time())
            except Exception:  # a bad pass must not stop every later delivery; the rows stay in the store
                log.exception("webhook delivery pass failed")
                wait = 1.0
            self._wake.wait(wait)
            self._wake.clear()

    def deliver_due(self, now: float) -> float:
        """POST every due delivery once; returns how long to wait before the next pass."""
        with self.store.read() as conn:
            due = (
                conn.execute(
                    sa.select(webhook_deliveries)
                    .where(webhook_deliveries.c.state == "pending", webhook_deliveries.c.next_at <= now)
                    .order_by(webhook_deliveries.c.seq)
                    .limit(_PAGE)
                )
                .mappings()
                .all()
            )
        for row in due:
            if self._stop.is_set():
                break
            self._attempt(row)
        with self.store.read() as conn:
            nxt = conn.execute(
                sa.select(sa.func.min(webhook_deliveries.c.next_at)).where(webhook_deliveries.c.state == "pending")
            ).scalar()
        # A batch that ends enqueues inside the processor's transaction; a short idle wait picks it up.
        return 0.2 if nxt is None else max(0.0, min(0.2, float(nxt) - time.time()))

    def _attempt(self, row: sa.RowMapping) -> None:
        secret = self.config.webhook_secret or ""
        at = time.time()
        status: int | None = None
        error: str | None = None
        try:
            headers = signing.headers(secret, row["event_id"], int(at), row["body"])
            response = self._client.post(row["url"], content=row["body"], headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        ok = status is not None and 200 <= status < 300
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts}
        if ok:
            values.update(state="delivered", delivered_at=time.time())
        elif attempts >= self.config.webhook_attempts:
            values["state"] = "gave_up"
            log.warning("webhook %s: gave up after %d attempts", row["event_id"], attempts)
        else:
            values["next_at"] = time.time() + backoff(self.config, attempts)
        with self.store.write() as conn:
            conn.execute(sa.insert(webhook_attempts).values(delivery=row["seq"], at=at, status=status, error=error))
            conn.execute(sa.update(webhook_deliveries).where(webhook_deliveries.c.seq == row["seq"]).values(values))


def deliveries(store: Store) -> list[dict[str, Any]]:
    """Every queued event with its attempts, oldest first (what `GET /_freight/webhooks` shows)."""
    with store.read() as conn:
        rows = conn.execute(sa.select(webhook_deliveries).order_by(webhook_deliveries.c.seq)).mappings().all()
        tries = conn.execute(sa.select(webhook_attempts).order_by(webhook_attempts.c.id)).mappings().all()
    out: list[dict[str, Any]] = []
    for row in rows:
        item = {k: v for k, v in row.items() if k != "body"}
        item["body"] = json.loads(row["body"])
        item["attempt_log"] = [
            {"at": t["at"], "status": t["status"], "error": t["error"]} for t in tries if t["delivery"] == row["seq"]
        ]
        out.append(item)
    return out
