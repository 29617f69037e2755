"""Job notifications (`freight run --notify URL`): signed events when a job ends or needs a person.

Events: `job.completed` (every document is final; the report says how many failed), `job.failed` (it ended with not
one document succeeded), `job.stopped` (an error that cannot heal stopped it, or it was canceled), and
`job.needs_attention` (the sample gate stopped it, a batch is stuck past its window, or another check - a cost cap -
calls `needs_attention`). The event's `data` is `{"id": job, "reason", "message", "report"}` with the job's report.

The idea: an outbox (store/outbox.py). An event is built here and queued by the store in the transaction of the
state change it announces; `deliver` then POSTs what is pending, signed as `freight serve`'s batch webhooks are
(`freight.signing`, Standard Webhooks, verifiable with the openai SDK's `webhooks.verify_signature`), and marks each
row delivered after a 2xx. Killed between the state change and the POST (crash point `notify.before_post`), the next
run of the job delivers it; a resumed job changes no state it already had, so it queues nothing twice. Delivery is at
least once: the `webhook-id` is the same on every retry, for receivers to deduplicate on.

The URLs are kept with the job's options (`opts.extra["notify"]`), so `freight resume` knows them; the secret never
is: it comes from `--notify-secret` or FREIGHT_NOTIFY_SECRET on every run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from freight import signing
from freight.domain import BatchState, JobState, UsageError
from freight.runner.crash import crashpoint
from freight.runner.job import RunOptions
from freight.runner.report import build_report
from freight.store import Store
from freight.store.outbox import Notification

SECRET_ENV = "FREIGHT_NOTIFY_SECRET"
EVENTS = ("job.completed", "job.failed", "job.stopped", "job.needs_attention")


def configure(opts: RunOptions, urls: list[str] | tuple[str, ...], secret: str | None) -> str | None:
    """Check the `--notify` URLs and the secret, keep the URLs with the job's options; returns the secret to sign
    with (given, else FREIGHT_NOTIFY_SECRET). A user error, before anything is sent, when one is unusable."""
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--notify {url}: use an http:// or https:// URL (where your receiver listens)")
    secret = secret or os.environ.get(SECRET_ENV) or None
    if urls:
        if not secret:
            raise UsageError(
                f"--notify needs a signing secret: pass --notify-secret whsec_... or set {SECRET_ENV} "
                "(receivers verify with it: openai's client.webhooks.verify_signature(body, headers, secret=...))"
            )
        opts.extra["notify"] = list(urls)
    return signing.check_secret(secret) if secret else None


def where(url: str) -> str:
    """A URL as notices show it: scheme and host only (a chat webhook's path is its credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path.strip("/") else url


def urls_of(opts: RunOptions) -> tuple[str, ...]:
    return tuple(opts.extra.get("notify") or ())


def event(
    store: Store,
    job_id: str,
    opts: RunOptions,
    type: str,
    *,
    state: JobState | None = None,
    reason: str = "",
    message: str = "",
    dedupe: str | None = None,
) -> Notification | None:
    """The event `type` with the job's report (as it reads once the job is in `state`), or None when the job has no
    --notify URL (nothing is built then)."""
    urls = urls_of(opts)
    if not urls:
        return None
    report = build_report(store, job_id)
    if state is not None:
        report["state"] = state.value
    data: dict[str, Any] = {"id": job_id, "reason": reason, "message": message, "report": report}
    return Notification(type=type, data=data, urls=urls, dedupe=dedupe)


def completion(store: Store, job_id: str, opts: RunOptions) -> Notification | None:
    """`job.completed`, or `job.failed` when not one document succeeded (None for a job already completed: a resumed
    job announces nothing twice)."""
    job = store.get_job(job_id)
    if not urls_of(opts) or job is None or job.state is JobState.COMPLETED:
        return None
    counts = store.item_counts(job_id)
    failed = not counts.get("succeeded") and sum(counts.values()) > 0
    kind = "job.failed" if failed else "job.completed"
    why = "no document succeeded" if failed else "every document is final"
    return event(store, job_id, opts, kind, state=JobState.COMPLETED, reason=why)


def needs_attention(store: Store, job_id: str, opts: RunOptions, reason: str, message: str, key: str) -> bool:
    """Queue `job.needs_attention` once per `key` for this job (a stuck batch, a cost cap reached ...), with no state
    change of its own. Returns True when it was queued now; `deliver` sends it."""
    if not urls_of(opts) or store.notified(job_id, key):  # seen on every idle pass: build no report for nothing
        return False
    note = event(store, job_id, opts, "job.needs_attention", reason=reason, message=message, dedupe=key)
    return note is not None and store.notify(job_id, note) > 0


STUCK_GRACE = timedelta(hours=1)


def watch_stuck(store: Store, job_id: str, opts: RunOptions, now: datetime | None = None) -> list[str]:
    """`job.needs_attention` (once per batch) for each batch still open an hour past the end of its window: the
    provider should have ended it, and polling alone will not. Returns what to note."""
    if not urls_of(opts):
        return []
    now = now or datetime.now(UTC)
    said: list[str] = []
    for row in store.batches(job_id, [BatchState.SUBMITTED, BatchState.IN_PROGRESS, BatchState.FINALIZING]):
        expires = row["expires_at"]
        if expires is None or now < expires + STUCK_GRACE:
            continue
        batch = row["provider_batch_id"]
        message = f"batch {batch} is still {row['state']} past its window (it expired at {expires:%Y-%m-%d %H:%M} UTC)"
        if needs_attention(store, job_id, opts, "stuck_batch", message, key=f"stuck:{batch}"):
            said.append(message)
    return said


def deliver(
    store: Store,
    job_id: str,
    secret: str | None,
    *,
    attempts: int = 3,
    backoff: float = 0.25,
    on_notice: Callable[[str], None] = lambda _m: None,
    sleep: Callable[[float], None] = time.sleep,
    client: httpx.Client | None = None,
) -> int:
    """POST every pending event of the job, each up to `attempts` times with a doubling backoff (a short effort: the
    run is over), and returns how many remain undelivered: they stay in the outbox, and the next run or resume of
    the job tries again, as many times as it takes."""
    pending = store.notifications(job_id, state="pending")
    if not pending:
        return 0
    secret = secret or os.environ.get(SECRET_ENV)
    if not secret:
        on_notice(
            f"{len(pending)} notification(s) of {job_id} wait to be sent: pass --notify-secret or set {SECRET_ENV}"
        )
        return len(pending)
    left = 0
    with client or httpx.Client(timeout=10.0) as http:
        for row in pending:
            if not _send(store, http, row, secret, attempts, backoff, sleep):
                left += 1
                on_notice(
                    f"notification {row['type']} to {where(row['url'])} not delivered yet ({row['event_id']}): it is "
                    f"kept and sent again by the next `freight resume {job_id}`"
                )
    return left


def _send(
    store: Store,
    http: httpx.Client,
    row: dict[str, Any],
    secret: str,
    attempts: int,
    backoff: float,
    sleep: Callable[[float], None],
) -> bool:
    body = row["body"].encode()
    for n in range(attempts):
        if n:
            sleep(backoff * 2 ** (n - 1))
        crashpoint("notify.before_post")
        headers = signing.headers(secret, row["event_id"], int(datetime.now(UTC).timestamp()), body)
        try:
            response = http.post(row["url"], content=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        store.notification_attempted(row["id"], error)
        if error is None:
            return True
    return False
