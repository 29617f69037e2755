"""A job's page, in figures: its batches, what needs attention, results over time, failures by reason, what each fix
did and cost, its sample gates and notes. Each is one or two grouped queries over indexed columns, whatever the
job's size (the idea is queries.py's; migration 9 adds the two indexes these read).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from freight.domain import BatchState, JobState
from freight.store.schema import batches, events, items, outcomes, requests, samples
from freight.ui.queries import JobSummary, aware

# Events a user should read on a job's page (the rest are bookkeeping).
NOTE_KINDS = ("note", "job.stopped", "cost.unpriced", "batch.failed", "job.detached", "batch.adopted", "cost.cap")
STUCK_AFTER_S = 24 * 3600  # a batch still active a day after it was submitted is the provider's full window


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
