"""Kill the runner with SIGKILL at many points; `freight resume` finishes with every document final exactly once,
and the server saw no request (hence no batch) twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from freight.server.testing import LocalServer
from freight.store import Store
from freight.store.schema import outcomes, requests

from .conftest import PLANTED

POINTS = [
    "requests.created",
    "submit.before",
    "submit.after",
    "poll.updated",
    "ingest.recorded:3",
    "ingest.settled:5",
    "ingest.before_mark",
    "submit.after:2",
    "ingest.recorded:14",
]


def _freight(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "freight", *args], env=env, capture_output=True, text=True, timeout=120
    )


KEY_ENV = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
}


@pytest.mark.parametrize(
    "provider,points",
    [
        ("anthropic", POINTS[:5]),
        ("anthropic", POINTS[5:]),
        # The window between "the provider accepted the batch" and "the store knows it", for each way of finding
        # the batch again: metadata (openai, azure), display name (gemini).
        ("openai", ["submit.after", "ingest.recorded:3", "submit.after:2"]),
        ("azure", ["submit.after", "ingest.settled:4"]),
        ("gemini", ["submit.after", "ingest.recorded:3"]),
    ],
    ids=["anthropic-early", "anthropic-late", "openai", "azure", "gemini"],
)
def test_sigkill_anywhere_then_resume(
    tmp_path: Path, corpus: Path, server: LocalServer, provider: str, points: list[str]
) -> None:
    _kill_then_resume(tmp_path, corpus, server, provider, points, str(tmp_path / "f.db"))


# Inside a page of results (runner/loop.py `_record_page`): killed in the middle of the page's transaction (its
# outcomes inserted, its valid documents settled, nothing committed), killed once the page is committed (its valid
# documents settled with it) and before the rest (retries to build) is settled one by one, and killed after a page of
# those is settled in bulk on resume. On both databases: the page is one transaction on each.
PAGE_POINTS = [
    "ingest.mid_page",
    "ingest.page_recorded",
    "settle.page:2",
    "ingest.mid_page:3",
    "ingest.page_recorded:3",
]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_sigkill_inside_a_page_then_resume(
    tmp_path: Path, corpus: Path, server: LocalServer, provider: str, db_url: str
) -> None:
    _kill_then_resume(tmp_path, corpus, server, provider, PAGE_POINTS, db_url)


def _answered_and_recorded(store: Store, job_id: str) -> tuple[set[str], set[str]]:
    with store.engine.connect() as conn:
        answered = conn.execute(
            sa.select(requests.c.custom_id).where(
                requests.c.job_id == job_id, requests.c.state.in_(["done", "settled"])
            )
        ).scalars()
        recorded = conn.execute(sa.select(outcomes.c.custom_id).where(outcomes.c.job_id == job_id)).scalars()
        return set(answered), set(recorded)


def _kill_then_resume(
    tmp_path: Path, corpus: Path, server: LocalServer, provider: str, points: list[str], db: str
) -> None:
    env = {**os.environ, KEY_ENV[provider]: server.api_key}
    run = [
        "run",
        str(corpus),
        "--schema",
        str(corpus.parent / "schema.json"),
        "--model",
        "scripted-ctx-1200",
        "--max-tokens",
        "120",
        "--max-retries",
        "3",
        "--base-url",
        server.url_for(provider),
        "--provider",
        provider,
        "--db",
        db,
        "--poll-interval",
        "0.05",
        "--batch-size",
        "5",
        "--out",
        str(tmp_path / "out"),
    ]
    killed = 0
    for point in points:
        done = _freight(run, {**env, "FREIGHT_CRASH_AT": point})
        if done.returncode == -9:
            killed += 1
            with Store(db) as store:
                (job,) = store.list_jobs()
                answered, recorded = _answered_and_recorded(store, job.job_id)
            # Whatever the point, a request is marked answered exactly when its outcome is in the store: a page is
            # taken whole or not at all.
            assert answered == recorded, f"{point}: requests answered {len(answered)}, outcomes {len(recorded)}"
            if point.startswith("ingest.page_recorded"):
                assert recorded, f"{point}: killed after a page was committed, yet no outcome is recorded"
        else:  # the job finished before reaching this point
            assert done.returncode == 0, done.stderr
    assert killed >= min(3, len(points)), "the crash points were not reached: the test would prove nothing"
    with Store(db) as store:
        (job,) = store.list_jobs()
    final = _freight(["resume", job.job_id, "--db", db, "--poll-interval", "0.05"], env)
    if "nothing to resume" not in final.stderr:
        assert final.returncode == 0, final.stderr
    out = _freight(["results", job.job_id, "--db", db], env)
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(PLANTED)  # every document exactly once
    assert {x["id"]: x["status"] for x in lines} == {d: want for d, (_, want) in PLANTED.items()}

    sent = Counter(r["custom_id"] for r in server.records() if r["batch_id"])
    twice = [c for c, n in sent.items() if n > 1]
    assert not twice, f"submitted twice: {twice}"
