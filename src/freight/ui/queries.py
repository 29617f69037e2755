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

from freight.domain import BatchState, JobState
from freight.runner.job import RunOptions
from freight.store.schema import batches, events, items, jobs, outcomes, requests, samples

PAGE = 50
FINAL_ITEM_STATES = ("succeeded", "failed", "canceled")
# Events a user should read on a job's page (the rest are bookkeeping).
NOTE_KINDS = ("note", "job.stopped", "cost.unpriced", "batch.failed", "job.detached", "batch.adopted", "cost.cap")
STUCK_AFTER_S = 24 * 3600  # a batch still active a day after it was submitted is the provider's full window


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


# --- a job's page -------------------------------------------------------------------------------------------------


def job_batches(conn: sa.Connection, job_id: str, limit: int = 200) -> tuple[list[dict[str, Any]], int]:
    """The job's first `limit` batches in submission order, and how many it has."""
    total = conn.execute(sa.select(sa.func.count()).where(batches.c.job_id == job_id)).scalar_one()
    rows = conn.execute(sa.select(batches).where(batches.c.job_id == job_id).order_by(batches.c.id).limit(limit))
    out = []
    for r in rows.mappings():
        d = dict(r)
        for k in ("created_at", "submitted_at", "expires_at", "ended_at", "ingested_at"):
            d[k] = aware(d[k])
        out.append(d)
    return out, int(total)


def attention(summary: JobSummary, batch_rows: list[dict[str, Any]], gate: list[dict[str, Any]],
              notes: list[dict[str, Any]], now: datetime) -> list[str]:  # fmt: skip
    """What a user should look at now: a batch stuck past its window, the gate that stopped the job, a cost cap."""
    found: list[str] = []
    active = {BatchState.SUBMITTED.value, BatchState.IN_PROGRESS.value, BatchState.FINALIZING.value}
    for b in batch_rows:
        if b["state"] not in active or b["submitted_at"] is None:
            continue
        late = b["expires_at"] is not None and now > b["expires_at"]
        if late or (now - b["submitted_at"]).total_seconds() > STUCK_AFTER_S:
            found.append(
                f"batch {b['id']} ({b['provider_batch_id']}) is still {b['state']} since "
                f"{b['submitted_at']:%Y-%m-%d %H:%M} UTC"
                + (f", past its expiry {b['expires_at']:%Y-%m-%d %H:%M}" if late else "")
            )
    if summary.state == JobState.STOPPED.value and gate and not gate[-1]["passed"]:
        found.append(
            f"the sample gate stopped the job: first-pass rate {gate[-1]['rate']:.0%} "
            f"(needs {gate[-1].get('min_first_pass') or 0.9:.0%})"
        )
    for n in notes:
        if n["kind"] == "cost.cap" or "cost cap" in str(n["data"].get("message", "")):
            found.append(f"cost cap reached: {n['data'].get('message', '')}")
        elif n["kind"] == "job.stopped":
            found.append(f"the job stopped: {n['data'].get('message', '')}")
    if summary.cost_usd is None:
        found.append("a model had no price: the job's cost is unknown (--prices FILE or --price-as MODEL)")
    return found


def results_over_time(conn: sa.Connection, job_id: str, buckets: int = 60) -> dict[str, Any]:
    """Outcomes recorded per time bucket, by status: the whole job in at most `buckets` GROUP BY rows."""
    epoch: sa.ColumnElement[Any]
    if conn.dialect.name == "postgresql":
        epoch = sa.extract("epoch", outcomes.c.recorded_at)
    else:
        epoch = (sa.func.julianday(outcomes.c.recorded_at) - 2440587.5) * 86400.0
    lo, hi = conn.execute(sa.select(sa.func.min(epoch), sa.func.max(epoch)).where(outcomes.c.job_id == job_id)).one()
    if lo is None:
        return {"start": None, "width": 0.0, "series": {}, "buckets": 0}
    lo, hi = float(lo), float(hi)
    width = max((hi - lo) / buckets, 0.001)
    index = (
        sa.func.floor((epoch - lo) / width)
        if conn.dialect.name == "postgresql"
        else sa.cast((epoch - lo) / width, sa.Integer)
    )
    rows = conn.execute(
        sa.select(index.label("b"), outcomes.c.status, sa.func.count())
        .where(outcomes.c.job_id == job_id)
        .group_by(sa.literal_column("b"), outcomes.c.status)
    ).all()
    series: dict[str, list[int]] = {}
    for b, status, n in rows:
        series.setdefault(status, [0] * (buckets + 1))[min(int(b), buckets)] += int(n)
    return {"start": datetime.fromtimestamp(lo, UTC), "width": width, "series": series, "buckets": buckets + 1}


def failures(conn: sa.Connection, job_id: str, examples: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Documents that failed for good, grouped by reason, and failed attempts (fixed or not) by kind; each group
    with its count and a few examples."""
    kind = items.c.error["kind"].as_string()
    final = []
    for reason, n in conn.execute(
        sa.select(kind, sa.func.count())
        .where(items.c.job_id == job_id, items.c.state == "failed")
        .group_by(kind)
        .order_by(sa.func.count().desc())
    ).all():
        ex = conn.execute(
            sa.select(items.c.item_id, items.c.error)
            .where(items.c.job_id == job_id, items.c.state == "failed", kind == reason)
            .order_by(items.c.seq)
            .limit(examples)
        ).all()
        final.append({"reason": reason or "?", "count": int(n), "examples": [
            {"item_id": i, "message": (e or {}).get("message", "")} for i, e in ex]})  # fmt: skip
    reason_col = sa.func.coalesce(outcomes.c.kind, outcomes.c.status)
    attempts = []
    for reason, n in conn.execute(
        sa.select(reason_col, sa.func.count())
        .where(outcomes.c.job_id == job_id, outcomes.c.status != "succeeded")
        .group_by(reason_col)
        .order_by(sa.func.count().desc())
    ).all():
        ex = conn.execute(
            sa.select(requests.c.item_id, requests.c.custom_id)
            .join(
                outcomes, sa.and_(outcomes.c.job_id == requests.c.job_id, outcomes.c.custom_id == requests.c.custom_id)
            )  # fmt: skip
            .where(requests.c.job_id == job_id, outcomes.c.status != "succeeded", reason_col == reason)
            .limit(examples)
        ).all()
        attempts.append({"reason": reason, "count": int(n), "examples": [
            {"item_id": i, "custom_id": c} for i, c in ex]})  # fmt: skip
    return {"documents": final, "attempts": attempts}


def fixes(conn: sa.Connection, job_id: str, first_pass: int) -> list[dict[str, Any]]:
    """Per fix ("first_pass" for the first requests): requests made, what they cost, documents touched and how many
    of those ended succeeded (for the first requests: succeeded on that first try, `first_pass`). The retries are
    few and read through the (job_id, fix) index; the first requests' figures are the job's totals less theirs."""
    on_outcome = sa.and_(outcomes.c.job_id == requests.c.job_id, outcomes.c.custom_id == requests.c.custom_id)
    rows = [
        {"fix": name, "requests": int(n), "documents": int(docs), "saved": int(saved), "cost_usd": float(cost or 0)}
        for name, n, docs, saved, cost in conn.execute(
            sa.select(
                requests.c.fix,
                sa.func.count(),
                sa.func.count(sa.distinct(requests.c.item_id)),
                sa.func.count(sa.distinct(sa.case((items.c.state == "succeeded", requests.c.item_id)))),
                sa.func.sum(outcomes.c.cost_usd),
            )
            .join(items, sa.and_(items.c.job_id == requests.c.job_id, items.c.item_id == requests.c.item_id))
            .outerjoin(outcomes, on_outcome)
            .where(requests.c.job_id == job_id, requests.c.fix.is_not(None))
            .group_by(requests.c.fix)
            .order_by(requests.c.fix)
        ).all()
    ]
    first = conn.execute(
        sa.select(sa.func.count()).where(requests.c.job_id == job_id, requests.c.fix.is_(None))
    ).scalar_one()
    total = conn.execute(sa.select(sa.func.sum(outcomes.c.cost_usd)).where(outcomes.c.job_id == job_id)).scalar()
    if first:
        spent = float(total or 0.0) - sum(r["cost_usd"] for r in rows)
        rows.insert(0, {"fix": "first_pass", "requests": int(first), "documents": int(first), "saved": first_pass,
                        "cost_usd": round(spent, 6)})  # fmt: skip
    return rows


def gate_reports(conn: sa.Connection, job_id: str) -> list[dict[str, Any]]:
    """The job's sample gates, oldest first, each with the sample's report when it is still in the store."""
    gates = [
        dict(d or {})
        for d in conn.execute(
            sa.select(events.c.data).where(events.c.job_id == job_id, events.c.kind == "sample.gate")
            .order_by(events.c.id)
        ).scalars()
    ]  # fmt: skip
    ids = [g["sample_id"] for g in gates if g.get("sample_id") is not None]
    reports = dict(conn.execute(sa.select(samples.c.id, samples.c.report).where(samples.c.id.in_(ids))).all())
    for g in gates:
        report = reports.get(g.get("sample_id")) or {}
        g["report"] = report
        g["min_first_pass"] = report.get("min_first_pass")
        g["rate"] = float(g.get("rate") or 0.0)
    return gates


def notes(conn: sa.Connection, job_id: str, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(events.c.at, events.c.kind, events.c.data)
        .where(events.c.job_id == job_id, events.c.kind.in_(NOTE_KINDS))
        .order_by(events.c.id.desc())
        .limit(limit)
    ).mappings()
    return [{"at": aware(r["at"]), "kind": r["kind"], "data": dict(r["data"] or {})} for r in rows]


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
