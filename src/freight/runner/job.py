"""A job's identity and its start: the same command on the same input is the same job, so running it again resumes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freight.domain import Api, FreightError, Item, ItemState, Job, JobState
from freight.plan import route
from freight.plan.model import Workflow
from freight.plan.pricing import Pricer
from freight.plan.routing import Decision
from freight.runner.build import Template, build_request
from freight.runner.inputs import Document, fingerprint, read_input
from freight.runner.signature import signature
from freight.store import Store


@dataclass
class RunOptions:
    """Everything a run needs, stored with the job so that `freight resume JOB` needs no flags."""

    input: str
    provider: str
    model: str
    prompt: str = "{document}"
    system: str | None = None
    schema: dict[str, Any] | None = None
    fallback_prompt: str | None = None
    max_tokens: int = 1024
    max_retries: int = 2
    temperature: float | None = None
    mode: str = "batch"  # batch | sync | auto
    base_url: str | None = None
    out: str | None = None
    id_field: str | None = None
    text_field: str | None = None
    deadline: str | None = None  # ISO 8601; with --mode auto, a deadline inside the batch window runs synchronously
    # The embedded server's engine when the run is on it (base_url is then None: its port changes every run, so the
    # engine, not the URL, is what identifies where the job ran).
    engine: str | None = None
    # How the run is priced: --prices FILE, --price-as MODEL, --allow-unpriced. Not part of the job's identity.
    prices: str | None = None
    price_as: str | None = None
    allow_unpriced: bool = False
    # The cost cap (--max-cost, US dollars, None: none) and whether reaching it cancels the batches in flight.
    # Not part of the job's identity: `freight resume JOB --max-cost N` raises it (runner/budget.py).
    max_cost: float | None = None
    max_cost_cancel: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # --endpoint: which API of the provider answers each document (chat, responses, embeddings), and an embedding's
    # size (--dimensions). Left out of the job's identity at their defaults, so jobs made before they existed keep
    # their ids.
    api: Api = "chat"
    dimensions: int | None = None

    @property
    def endpoint(self) -> str:
        """Where the requests go, as `freight jobs` shows it: the embedded engine, a base URL, or the provider's API."""
        if self.engine:
            return f"embedded:{self.engine}"
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"{self.provider} API"

    def pricer(self) -> Pricer:
        return Pricer.load(self.prices, self.price_as)

    def template(self) -> Template:
        return Template(
            model=self.model,
            max_tokens=self.max_tokens,
            prompt=self.prompt,
            system=self.system,
            schema=self.schema,
            temperature=self.temperature,
            fallback_prompt=self.fallback_prompt,
            api=self.api,
            params={"dimensions": self.dimensions} if self.dimensions else {},
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RunOptions:
        return cls(**config)


# Options that change neither what is asked nor where it is sent: the same job with or without them.
_NOT_IDENTITY = (
    "input", "out", "base_url", "engine", "prices", "price_as", "allow_unpriced", "max_cost", "max_cost_cancel", "extra"
)  # fmt: skip


def job_id_for(opts: RunOptions) -> str:
    """Content-derived: the input's bytes, every option that changes what is asked, and where it is sent (provider,
    endpoint, engine) - so the same command against another endpoint is another job, and outputs are never handed
    back from a job that ran somewhere else."""
    what = {k: v for k, v in asdict(opts).items() if k not in _NOT_IDENTITY}
    for key, default in (("api", "chat"), ("dimensions", None)):
        if what.get(key) == default:
            del what[key]
    what["input"] = fingerprint(Path(opts.input))
    what["endpoint"] = opts.endpoint
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    return f"job_{digest[:12]}"


def open_job(store: Store, opts: RunOptions) -> tuple[Job, bool]:
    """The job for these options: found (resumed) or created with its items ingested. Returns (job, resumed)."""
    job_id = job_id_for(opts)
    job = store.get_job(job_id)
    if job is not None and store.events(job_id, kind="job.ingested"):
        return job, True
    if job is None:
        job = store.create_job(
            Job(
                job_id=job_id, name=Path(opts.input).name, provider=opts.provider, model=opts.model, config=asdict(opts)
            )
        )
    else:
        store.delete_items(job_id)  # an ingest cut short by a crash: start it over
    ingest(
        store,
        job_id,
        read_input(Path(opts.input), opts.id_field, opts.text_field),
        "sync" if opts.mode == "sync" else "batch",
    )
    return job, False


# Documents read before they are recorded together: each transaction is an fsync, and 500 a transaction spent more
# time committing than inserting. At most this many, and at most INGEST_BYTES of text held at once.
INGEST_SLICE = 5000
INGEST_BYTES = 16 * 1024 * 1024


def ingest(store: Store, job_id: str, docs: Iterable[Document], mode: str) -> int:
    """Add the documents as items, a slice (INGEST_SLICE) per transaction; a ready-made request is recorded with its
    item."""
    n = 0
    chunk: list[Document] = []

    def flush() -> None:
        store.add_items(
            job_id,
            (
                Item(
                    item_id=d.doc_id, job_id=job_id, source=d.source, text=d.text, signature=signature(d.text, d.source)
                )
                for d in chunk
            ),
            start=n - len(chunk),
        )
        ready = [d.request for d in chunk if d.request is not None]
        if ready:
            store.add_requests(job_id, ready, mode=mode)
        # A document that could not be read fails alone, its reason recorded; one read by a guessed encoding says so.
        for d in chunk:
            if d.error:
                error = {"kind": "unreadable", "message": d.error, "raw_type": ""}
                store.set_item_state(job_id, d.doc_id, ItemState.FAILED, error=error)
            if d.note or d.error:
                store.log(job_id, "note", message=d.note or d.error)

    held = 0
    for doc in docs:
        chunk.append(doc)
        n += 1
        held += len(doc.text)
        if len(chunk) >= INGEST_SLICE or held >= INGEST_BYTES:
            flush()
            chunk = []
            held = 0
    if chunk:
        flush()
    if n == 0:
        raise FreightError("the input holds no documents")
    store.log(job_id, "job.ingested", items=n)
    return n


def decide_mode(opts: RunOptions, now: datetime) -> Decision:
    """`--mode auto`: route the job by the planner's rules, reading the input once without keeping it."""
    count = 0
    tools = False
    template = opts.template()
    for doc in read_input(Path(opts.input), opts.id_field, opts.text_field):
        count += 1
        request = doc.request or build_request(template, custom_id="probe", item_id=doc.doc_id, document=doc.text)
        tools = tools or request.needs_sync() is not None
    try:
        deadline = datetime.fromisoformat(opts.deadline) if opts.deadline else None
    except ValueError:
        raise FreightError(
            f"--deadline {opts.deadline!r} is not an ISO 8601 time (e.g. 2026-11-26T09:00:00Z)"
        ) from None
    if deadline is not None and deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    workflow = Workflow(
        name=Path(opts.input).name, model=opts.model, tool_calling=tools, requests_per_run=count, deadline=deadline
    )
    return route(workflow, now=now)


def resume_job(store: Store, job_id: str) -> tuple[Job, RunOptions]:
    job = store.get_job(job_id)
    if job is None:
        raise FreightError(f"no job {job_id!r} in this store: `freight jobs` lists them")
    if job.state in (JobState.COMPLETED, JobState.CANCELED):
        raise FreightError(f"job {job_id} is {job.state.value}: nothing to resume (`freight results {job_id}`)")
    return job, RunOptions.from_config(job.config)
