"""The notify outbox: job events (`job.completed` ...) waiting to be POSTed to `freight run --notify` URLs.

The invariant: an event is queued in the same transaction as the state change it announces (`StoreBase.set_job_state`
takes a `Notification`), or, for an event without a state change, at most once per `dedupe` key. Delivery
(`runner/notify.py`) marks a row delivered only after the receiver answered 2xx, so delivery is at least once: a
crash between the POST and the mark sends it again with the same `webhook-id`, which receivers deduplicate on.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from freight.store.schema import notify_outbox


@dataclass(frozen=True)
class Notification:
    """An event to queue: its type, its data (the job's report), the URLs it goes to. `dedupe`: queue it once per job
    for this key (default: a fresh key, for events that come with a state change and so happen once anyway)."""

    type: str
    data: dict[str, Any]
    urls: tuple[str, ...]
    dedupe: str | None = None
    event_id: str = field(default_factory=lambda: "evt_" + secrets.token_hex(12))

    def body(self, now: datetime) -> str:
        event = {"id": self.event_id, "object": "event", "type": self.type, "created_at": int(now.timestamp())}
        return json.dumps({**event, "data": self.data}, separators=(",", ":"), default=str)


def enqueue(conn: sa.Connection, job_id: str, note: Notification) -> int:
    """Queue `note` for each of its URLs in the caller's transaction; returns the rows added (0 when its dedupe key
    was queued before)."""
    if not note.urls:
        return 0
    dedupe = note.dedupe or note.event_id
    seen = conn.execute(
        sa.select(sa.func.count()).where(notify_outbox.c.job_id == job_id, notify_outbox.c.dedupe == dedupe)
    ).scalar_one()
    if seen:
        return 0
    now = datetime.now(UTC)
    body = note.body(now)
    rows = [
        {"job_id": job_id, "event_id": note.event_id, "dedupe": dedupe, "url": url, "type": note.type, "body": body,
         "state": "pending", "attempts": 0, "created_at": now}
        for url in note.urls
    ]  # fmt: skip
    conn.execute(notify_outbox.insert(), rows)
    return len(rows)


class OutboxStore:
    """The outbox's reads and writes, mixed into the job store."""

    engine: sa.Engine

    if TYPE_CHECKING:  # StoreBase's, through the Store this is mixed into (no stub at run time to shadow it)

        def _read(self) -> sa.Connection: ...

    def notify(self, job_id: str, note: Notification) -> int:
        """Queue an event that comes with no state change (`job.needs_attention`), once per `note.dedupe`."""
        with self.engine.begin() as conn:
            return enqueue(conn, job_id, note)

    def notified(self, job_id: str, dedupe: str) -> bool:
        """Whether an event with this dedupe key was ever queued for the job."""
        q = sa.select(sa.func.count()).where(notify_outbox.c.job_id == job_id, notify_outbox.c.dedupe == dedupe)
        with self._read() as conn:
            return bool(conn.execute(q).scalar_one())

    def notifications(self, job_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        q = notify_outbox.select().order_by(notify_outbox.c.id)
        if job_id is not None:
            q = q.where(notify_outbox.c.job_id == job_id)
        if state is not None:
            q = q.where(notify_outbox.c.state == state)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]

    def notification_attempted(self, row_id: int, error: str | None) -> None:
        """One delivery attempt: delivered when `error` is None, else counted with its error, to be retried."""
        values: dict[str, Any] = {"attempts": notify_outbox.c.attempts + 1, "last_error": error}
        if error is None:
            values.update(state="delivered", delivered_at=datetime.now(UTC))
        with self.engine.begin() as conn:
            conn.execute(notify_outbox.update().where(notify_outbox.c.id == row_id).values(values))
