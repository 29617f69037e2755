"""What the dashboard reads: set-based, read-only queries over the store, aggregated and paginated in SQL.

The dashboard renders a snapshot of the store (the only truth); it holds no state of its own. Every query here is
bounded by the size of a page or of a GROUP BY, never by the number of documents of a job: a 100,000-document job's
page costs a handful of aggregates over indexed columns, not 100,000 rows in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from freight.runner.job import RunOptions
from freight.store.schema import events, items, jobs, outcomes, requests

PAGE = 50
FINAL_ITEM_STATES = ("succeeded", "failed", "canceled")


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; everything freight writes is UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


@dataclass
class JobSummary:
    job_id: str
    name: str
    state: str
    provider: str
    model: str
    endpoint: str
    created_at: datetime | None
    updated_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    first_pass: int = 0
    cost_usd: float | None = 0.0
    sync_cost_usd: float | None = 0.0

    @property
    def documents(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINAL_ITEM_STATES)

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.documents, 1) if self.documents else 0.0

    @property
    def first_pass_rate(self) -> float | None:
        """Of the documents with a final outcome, the share that succeeded on their first request."""
        return round(self.first_pass / self.done, 4) if self.done else None

    @property
    def saving_usd(self) -> float | None:
        if self.cost_usd is None or self.sync_cost_usd is None:
            return None
        return round(self.sync_cost_usd - self.cost_usd, 6)

    def live(self) -> dict[str, Any]:
        """What the pages' polling reads: the numbers that move while a job runs."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "documents": self.documents,
            "done": self.done,
            "percent": self.percent,
            **{s: self.counts.get(s, 0) for s in ("pending", "in_flight", *FINAL_ITEM_STATES)},
            "first_pass_rate": self.first_pass_rate,
            "cost_usd": self.cost_usd,
            "sync_cost_usd": self.sync_cost_usd,
            "saving_usd": self.saving_usd,
        }


def _endpoint(config: dict[str, Any]) -> str:
    try:
        return RunOptions.from_config(config).endpoint
    except TypeError:  # a config written by another freight version: show what is certain
        return str(config.get("base_url") or config.get("provider") or "?")


def state_counts(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)).all()
    return {state: int(n) for state, n in rows}


def job_summaries(
    conn: sa.Connection, *, state: str | None = None, job_ids: list[str] | None = None, page: int = 0
) -> list[JobSummary]:
    """A page of jobs (newest first), each with its counts, first-pass count and costs: five grouped queries for
    the whole page, whatever the jobs' sizes."""
    q = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.job_id)
    if state:
        q = q.where(jobs.c.state == state)
    if job_ids is not None:
        q = q.where(jobs.c.job_id.in_(job_ids))
    rows = conn.execute(q.limit(PAGE).offset(page * PAGE)).mappings().all()
    out = {
        r["job_id"]: JobSummary(
            job_id=r["job_id"],
            name=r["name"],
            state=r["state"],
            provider=r["provider"],
            model=r["model"],
            endpoint=_endpoint(r["config"]),
            created_at=aware(r["created_at"]),
            updated_at=aware(r["updated_at"]),
        )
        for r in rows
    }
    ids = list(out)
    if not ids:
        return []
    for job_id, st, n in conn.execute(
        sa.select(items.c.job_id, items.c.state, sa.func.count())
        .where(items.c.job_id.in_(ids))
        .group_by(items.c.job_id, items.c.state)
    ).all():
        out[job_id].counts[st] = int(n)
    for s in out.values():
        s.first_pass = s.counts.get("succeeded", 0)
    for job_id, n in conn.execute(_retried_successes(ids)).all():
        out[job_id].first_pass -= int(n)
    for job_id, paid, sync in conn.execute(
        sa.select(outcomes.c.job_id, sa.func.sum(outcomes.c.cost_usd), sa.func.sum(outcomes.c.sync_cost_usd))
        .where(outcomes.c.job_id.in_(ids))
        .group_by(outcomes.c.job_id)
    ).all():
        out[job_id].cost_usd = float(paid or 0.0)
        out[job_id].sync_cost_usd = float(sync or 0.0)
    # The sample gate's spend (paid at the synchronous price) and "no price" marks live in the job's log.
    for job_id, kind, data in conn.execute(
        sa.select(events.c.job_id, events.c.kind, events.c.data).where(
            events.c.job_id.in_(ids), events.c.kind.in_(("sample.gate", "cost.unpriced"))
        )
    ).all():
        s = out[job_id]
        if kind == "cost.unpriced":
            s.cost_usd = s.sync_cost_usd = None
        elif s.cost_usd is not None and s.sync_cost_usd is not None:
            spend = float((data or {}).get("cost_usd") or 0.0)
            s.cost_usd += spend
            s.sync_cost_usd += spend
    for s in out.values():
        if s.cost_usd is not None and s.sync_cost_usd is not None:
            s.cost_usd, s.sync_cost_usd = round(s.cost_usd, 6), round(s.sync_cost_usd, 6)
    return list(out.values())


def _retried_successes(ids: list[str]) -> sa.Select[Any]:
    """Per job: succeeded documents that needed more than one request (a retry or a chunk: a request made by a fix).
    The first-pass count is the succeeded count less these; retries are few, and read from the (job_id, fix) index,
    so this never groups every request."""
    again = (
        sa.select(requests.c.job_id, requests.c.item_id)
        .where(requests.c.job_id.in_(ids), requests.c.fix.is_not(None))
        .distinct()
        .subquery()
    )
    return (
        sa.select(again.c.job_id, sa.func.count())
        .join(items, sa.and_(items.c.job_id == again.c.job_id, items.c.item_id == again.c.item_id))
        .where(items.c.state == "succeeded")
        .group_by(again.c.job_id)
    )


def job_head(conn: sa.Connection, job_id: str) -> JobSummary | None:
    """The job's row alone, without its counts or costs (for a document's page: no aggregate over the job); its
    cost reads None when a request had no price."""
    r = conn.execute(sa.select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
    if r is None:
        return None
    unpriced = conn.execute(
        sa.select(events.c.id).where(events.c.job_id == job_id, events.c.kind == "cost.unpriced").limit(1)
    ).first()
    return JobSummary(job_id=r["job_id"], name=r["name"], state=r["state"], provider=r["provider"], model=r["model"],
                      endpoint=_endpoint(r["config"]), created_at=aware(r["created_at"]),
                      updated_at=aware(r["updated_at"]), cost_usd=None if unpriced else 0.0)  # fmt: skip


def job_summary(conn: sa.Connection, job_id: str) -> JobSummary | None:
    found = job_summaries(conn, job_ids=[job_id])
    return found[0] if found else None


def job_config(conn: sa.Connection, job_id: str) -> dict[str, Any]:
    return dict(conn.execute(sa.select(jobs.c.config).where(jobs.c.job_id == job_id)).scalar_one() or {})


def documents(
    conn: sa.Connection, job_id: str, *, state: str | None = None, after: int = -1
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the job's documents in input order (keyset on seq), each with its attempts and fixes; and the seq
    to continue after, or None on the last page."""
    q = sa.select(items.c.item_id, items.c.seq, items.c.state, items.c.source, items.c.error).where(
        items.c.job_id == job_id, items.c.seq > after
    )
    if state:
        q = q.where(items.c.state == state)
    rows = [dict(r) for r in conn.execute(q.order_by(items.c.seq).limit(PAGE + 1)).mappings()]
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    ids = [r["item_id"] for r in rows]
    tried: dict[str, list[str | None]] = {}
    for item_id, fix in conn.execute(
        sa.select(requests.c.item_id, requests.c.fix)
        .where(requests.c.job_id == job_id, requests.c.item_id.in_(ids))
        .order_by(requests.c.created_at, requests.c.custom_id)
    ).all():
        tried.setdefault(item_id, []).append(fix)
    for r in rows:
        r["attempts"] = len(tried.get(r["item_id"], []))
        r["fixes"] = [f for f in tried.get(r["item_id"], []) if f]
    return rows, (rows[-1]["seq"] if more and rows else None)
