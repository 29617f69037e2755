"""One runner per job: a lease row in the store, with an owner, a host, a pid and a heartbeat.

The idea: whoever holds a job's row in `leases` is the only one allowed to pack, submit, poll or settle it. The row
is taken in one transaction (SQLite: BEGIN IMMEDIATE serializes writers; PostgreSQL: INSERT ... ON CONFLICT DO
NOTHING, then the row locked FOR UPDATE), so two runners started in the same millisecond cannot both win. The holder
renews `expires_at` while it works (`JobLease` does so from a background thread) and deletes the row when it ends.

A holder that died without releasing is taken over when its lease has expired — or at once when it was a process on
this host that no longer exists (kill -9, a crashed terminal). A holder on another host is only ever judged by its
heartbeat, because a pid means nothing across machines.

The API is small on purpose (acquire / heartbeat / release / holder, keyed by any string): it is what several
workers sharing one store will claim work with later, each with its own short ttl.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from freight.domain import JobHeld
from freight.store.schema import leases
from freight.store.store import StoreBase, _aware, _now

DEFAULT_TTL = 60.0  # seconds a heartbeat keeps a lease alive; the holder renews it every ttl/4


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as recorded."""

    key: str
    owner: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime

    def describe(self) -> str:
        return (
            f"pid {self.pid} on {self.host}, running since {self.started_at:%Y-%m-%d %H:%M:%S} UTC "
            f"(last heartbeat {self.heartbeat_at:%H:%M:%S} UTC)"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is someone else's
        return True
    return True


def _dead(holder: Holder, now: datetime) -> bool:
    if holder.expires_at <= now:
        return True
    return holder.host == socket.gethostname() and not _pid_alive(holder.pid)


class LeaseStore(StoreBase):
    """The lease table's four operations. Every one is a single short transaction."""

    def acquire_lease(self, key: str, owner: str, ttl: float = DEFAULT_TTL) -> tuple[bool, Holder]:
        """Take the lease on `key` for `owner`, or renew it when `owner` holds it already. Returns (taken, holder):
        the holder is `owner`'s own row when taken, else the live holder that kept it."""
        now = _now()
        mine = {
            "owner": owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "heartbeat_at": now,
            "expires_at": now + timedelta(seconds=ttl),
        }
        with self.engine.begin() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            taken = conn.execute(insert(leases).values(job_id=key, **mine).on_conflict_do_nothing()).rowcount == 1
            if not taken:
                current = self._holder(conn, key, lock=True)
                if current is not None and current.owner != owner and not _dead(current, now):
                    return False, current
                if current is not None and current.owner != owner:
                    self._event(
                        conn, key, "lease.taken_over", host=current.host, pid=current.pid, owner=current.owner[:8]
                    )
                conn.execute(leases.update().where(leases.c.job_id == key).values(**mine))
            self._event(conn, key, "lease.acquired", host=mine["host"], pid=mine["pid"], owner=owner[:8])
            held = self._holder(conn, key, lock=False)
        assert held is not None
        return True, held

    def heartbeat_lease(self, key: str, owner: str, ttl: float = DEFAULT_TTL) -> bool:
        """Renew `owner`'s lease; False when it is no longer `owner`'s (it expired and was taken over)."""
        now = _now()
        with self.engine.begin() as conn:
            renewed = conn.execute(
                leases.update()
                .where(leases.c.job_id == key, leases.c.owner == owner)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=ttl))
            ).rowcount
        return bool(renewed)

    def release_lease(self, key: str, owner: str) -> None:
        with self.engine.begin() as conn:
            gone = conn.execute(leases.delete().where(leases.c.job_id == key, leases.c.owner == owner)).rowcount
            if gone:
                self._event(conn, key, "lease.released", owner=owner[:8])

    def lease_holder(self, key: str) -> Holder | None:
        with self._read() as conn:
            return self._holder(conn, key, lock=False)

    def _holder(self, conn: sa.Connection, key: str, *, lock: bool) -> Holder | None:
        q = leases.select().where(leases.c.job_id == key)
        if lock and conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).mappings().first()
        if row is None:
            return None
        return Holder(
            key=row["job_id"],
            owner=row["owner"],
            host=row["host"],
            pid=row["pid"],
            started_at=_aware(row["started_at"]) or _now(),
            heartbeat_at=_aware(row["heartbeat_at"]) or _now(),
            expires_at=_aware(row["expires_at"]) or _now(),
        )


class JobLease:
    """Hold a job's lease for the length of a `with` block, renewing it from a background thread.

    `wait=False`: a job held by a live runner raises `JobHeld` naming it. `wait=True`: wait until it is free (or its
    holder dies), calling `on_wait(holder)` once, so the caller can say what it is waiting for.
    """

    def __init__(
        self,
        store: LeaseStore,
        job_id: str,
        *,
        wait: bool = False,
        ttl: float = DEFAULT_TTL,
        on_wait: Callable[[Holder], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.wait = wait
        self.ttl = ttl
        self.on_wait = on_wait
        self.sleep = sleep
        self.owner = secrets.token_hex(16)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> JobLease:
        told = False
        while True:
            taken, holder = self.store.acquire_lease(self.job_id, self.owner, self.ttl)
            if taken:
                break
            if not self.wait:
                raise JobHeld(
                    f"job {self.job_id} is being run by {holder.describe()}. Wait for it to finish, "
                    f"add --wait to wait for it, or stop that process first (its lease expires "
                    f"{self.ttl:.0f} s after its last heartbeat when it died without releasing)"
                )
            if not told and self.on_wait is not None:
                self.on_wait(holder)
                told = True
            # Free when the holder releases or dies; a short pause keeps the store quiet meanwhile.
            self.sleep(min(1.0, self.ttl / 4))
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self.store.heartbeat_lease(self.job_id, self.owner, self.ttl):
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a store hiccup: the next beat tries again, expiry is ttl away
                continue

    def check(self) -> None:
        """Raise `JobHeld` when the lease was lost (this runner stalled past its ttl and another took over)."""
        if self.lost.is_set():
            holder = self.store.lease_holder(self.job_id)
            who = holder.describe() if holder else "another runner"
            raise JobHeld(f"job {self.job_id}: this runner's lease expired and {who} took the job over; this run stops")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.store.release_lease(self.job_id, self.owner)

    def __enter__(self) -> JobLease:
        return self if self._thread is not None else self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
