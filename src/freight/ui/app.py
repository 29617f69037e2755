"""`freight ui`: a web dashboard over the store — jobs, a job's batches, failures, fixes and costs, each document's
lineage — read-only except for the two buttons that say otherwise (cancel, resume), which call the library API.

The pages are server-rendered (Jinja2) snapshots of the store; a small script polls a JSON endpoint and updates the
numbers in place while a job runs (no full reload). The store stays the only truth: the app keeps no job state,
only the threads of the actions it started. Every response passes through `Secrets.scrub`, so a key that sits in
the environment (or anywhere it should not) is never shown.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import secrets as secrets_module
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from freight.domain import FreightError, JobState
from freight.store import Store
from freight.ui import breakdown as bd
from freight.ui import queries as q
from freight.ui.lineage import lineage
from freight.ui.svg import batch_timeline, results_chart

COOKIE = "freight_ui_token"
_SECRET_NAME = re.compile(r"(API_KEY|_KEY|TOKEN|SECRET|PASSWORD)$")


class Secrets:
    """Values that must never appear on a page: every environment variable named like a key (…_API_KEY, …_TOKEN,
    …_SECRET), read when the app starts, plus any the caller names."""

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        found = {v for k, v in os.environ.items() if _SECRET_NAME.search(k.upper()) and len(v) >= 8}
        self.values = sorted(found | {v for v in extra if v}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, "[redacted]")
        return text


@dataclass
class Action:
    kind: str  # cancel | resume
    thread: threading.Thread
    error: str | None = None


def money(v: float | None) -> str:
    return "unknown" if v is None else f"${v:,.4f}"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def when(dt: datetime | None) -> str:
    return "–" if dt is None else f"{dt:%Y-%m-%d %H:%M:%S}"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def create_app(db: str, *, token: str | None = None, poll_ms: int = 1000, poll_interval: float = 5.0) -> FastAPI:
    """The dashboard over the store at `db`. With `token`, every request must carry it (once as ?token=…, which
    sets a cookie; or as a Bearer header). `poll_ms`: how often the pages ask for new numbers; `poll_interval`: how
    often a job resumed from the dashboard polls its provider (as `freight resume`)."""
    store = Store(db)  # opened once: migrations run here, then every page only reads
    secrets = Secrets((token or "",))
    env = Environment(loader=PackageLoader("freight.ui", "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(money=money, pct=pct, when=when, pretty=pretty)
    actions: dict[str, Action] = {}
    # Printed in each confirmation form and required by its POST: another site can make a browser post a form to
    # this loopback address, but cannot read the confirmation page to learn this.
    nonce = secrets_module.token_urlsafe(16)
    app = FastAPI(title="freight ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @contextlib.contextmanager
    def read() -> Iterator[sa.Connection]:
        with store.engine.connect().execution_options(freight_read=True) as conn:
            yield conn

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(poll_ms=poll_ms, now=datetime.now(UTC), **ctx)
        return HTMLResponse(secrets.scrub(html), status_code=status)

    def data(value: Any) -> Response:
        return Response(secrets.scrub(json.dumps(value, default=str)), media_type="application/json")

    def missing(job_id: str, what: str = "") -> HTMLResponse:
        return page("missing.html", 404, message=f"No job {job_id!r}{what} in this store.")

    @app.middleware("http")
    async def need_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if token is None:
            return await call_next(request)
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            given = bearer[7:]
        if not hmac.compare_digest(given.encode(), token.encode()):
            return PlainTextResponse("a token is required: open the address `freight ui` printed", status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse)
    def jobs_page(state: str | None = None, page_no: int = 0) -> HTMLResponse:
        with read() as conn:
            jobs = q.job_summaries(conn, state=state or None, page=page_no)
            counts = q.state_counts(conn)
        return page("jobs.html", jobs=jobs, counts=counts, state=state, page_no=page_no, per=q.PAGE,
                    all_states=[s.value for s in JobState])  # fmt: skip

    @app.get("/api/jobs")
    def jobs_json(state: str | None = None, job: str | None = None) -> Response:
        with read() as conn:
            found = q.job_summaries(conn, state=state or None, job_ids=[job] if job else None)
        return data({"jobs": [s.live() for s in found]})

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(job_id: str, state: str | None = None, after: int = -1) -> HTMLResponse:
        now = datetime.now(UTC)
        with read() as conn:
            summary = q.job_summary(conn, job_id)
            if summary is None:
                return missing(job_id)
            batch_rows, n_batches = bd.job_batches(conn, job_id)
            gates = bd.gate_reports(conn, job_id)
            notes = bd.notes(conn, job_id)
            docs, next_after = q.documents(conn, job_id, state=state or None, after=after)
            ctx: dict[str, Any] = dict(
                job=summary,
                batches=batch_rows,
                n_batches=n_batches,
                timeline=batch_timeline(batch_rows, now),
                chart=results_chart(bd.results_over_time(conn, job_id)),
                failures=bd.failures(conn, job_id),
                fixes=bd.fixes(conn, job_id, summary.first_pass),
                gates=gates,
                notes=notes,
                attention=bd.attention(summary, batch_rows, gates, notes, now),
                docs=docs,
                doc_state=state,
                next_after=next_after,
                action=actions.get(job_id),
            )
        return page("job.html", **ctx)

    @app.get("/jobs/{job_id}/charts", response_class=HTMLResponse)
    def charts(job_id: str) -> HTMLResponse:
        """The job page's charts alone, for the live script to swap in when results arrive."""
        with read() as conn:
            rows, _ = bd.job_batches(conn, job_id)
            chart = results_chart(bd.results_over_time(conn, job_id))
        return page("charts.html", timeline=batch_timeline(rows, datetime.now(UTC)), chart=chart)

    @app.get("/jobs/{job_id}/documents/{item_id:path}", response_class=HTMLResponse)
    def document_page(job_id: str, item_id: str) -> HTMLResponse:
        with read() as conn:
            summary = q.job_head(conn, job_id)
            if summary is None:
                return missing(job_id)
            schema = q.job_config(conn, job_id).get("schema")
            found = lineage(conn, job_id, item_id, schema)
        if found is None:
            return missing(job_id, f" with a document {item_id!r}")
        return page("document.html", job=summary, doc=found)

    # --- the two actions: a confirmation page, then the library call in a thread --------------------------------

    allowed: dict[str, Callable[[str], bool]] = {
        "cancel": lambda state: not JobState(state).terminal or state == JobState.STOPPED.value,
        "resume": lambda state: state == JobState.STOPPED.value,
    }

    def start(kind: str, job_id: str) -> None:
        from freight import api  # the library facade: the same calls `freight cancel` / `freight resume` make

        def work() -> None:
            try:
                if kind == "cancel":
                    api.cancel(job_id, db=db, wait=True)
                else:
                    api.resume(job_id, db=db, poll_interval=poll_interval)
            except FreightError as exc:
                actions[job_id].error = secrets.scrub(str(exc))
            except Exception as exc:  # noqa: BLE001 - shown on the job's page, never a traceback
                actions[job_id].error = secrets.scrub(f"{type(exc).__name__}: {exc}")

        actions[job_id] = Action(kind, threading.Thread(target=work, name=f"ui-{kind}-{job_id}", daemon=True))
        actions[job_id].thread.start()

    @app.get("/jobs/{job_id}/{kind}", response_class=HTMLResponse)
    def confirm(job_id: str, kind: str) -> HTMLResponse:
        with read() as conn:
            summary = q.job_summary(conn, job_id)
        if summary is None or kind not in allowed:
            return missing(job_id)
        return page("confirm.html", job=summary, kind=kind, possible=allowed[kind](summary.state), nonce=nonce)

    @app.post("/jobs/{job_id}/{kind}", response_model=None)
    def act(job_id: str, kind: str, confirm: str = Form(""), nonce_: str = Form("", alias="nonce")) -> Response:
        with read() as conn:
            summary = q.job_summary(conn, job_id)
        if summary is None or kind not in allowed:
            return missing(job_id)
        if not hmac.compare_digest(nonce_.encode(), nonce.encode()):
            return page(
                "missing.html", 403, message="This confirmation did not come from this dashboard: open it again."
            )
        running = actions.get(job_id)
        if confirm != "yes" or not allowed[kind](summary.state) or (running and running.thread.is_alive()):
            return page("confirm.html", 409, job=summary, kind=kind, possible=False)
        start(kind, job_id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"ok": True})

    app.state.store = store
    app.state.actions = actions
    return app
