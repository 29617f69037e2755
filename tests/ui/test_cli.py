"""`freight ui` as a user starts it: loopback without a token, anything else behind one; a store it cannot open is a
clear error with exit 2 and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from freight.cli import app
from freight.cli.ui import loopback
from freight.domain import Job
from freight.server.testing import free_port
from freight.store import Store

from .conftest import serving


def test_only_loopback_addresses_go_without_a_token() -> None:
    assert all(loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2"))
    assert not any(loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


def test_a_token_is_asked_for_then_kept_in_a_cookie(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    Store(db).close()
    with serving(db, token="tok-1234567890") as base, httpx.Client(base_url=base, timeout=30) as client:
        refused = client.get("/")
        assert refused.status_code == 401 and "a token is required" in refused.text
        assert client.get("/?token=wrong").status_code == 401
        assert client.get("/?token=tok-1234567890").status_code == 200  # sets the cookie
        assert client.get("/api/jobs").status_code == 200
        assert httpx.get(f"{base}/api/jobs", headers={"authorization": "Bearer tok-1234567890"}).status_code == 200
        assert httpx.get(f"{base}/static/live.js").status_code == 401


def test_exposed_it_prints_an_address_with_a_token_that_opens_it(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FREIGHT_UI_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "freight", "ui", "--db", db, "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"freight ui: http://0.0.0.0:{port}/?token="), line
        token = line.split("?token=")[1].split()[0]
        assert len(token) >= 24
        # The address is printed before uvicorn listens: the page answers once it does (bounded wait on a connection).
        for _ in range(600):  # up to a minute on a loaded machine
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.ConnectError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stderr.read() if proc.stderr else "exited") from None
                time.sleep(0.1)
        assert r.status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/?token={token}", timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_store_that_cannot_be_opened_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["ui", "--db", "postgresql://nobody@127.0.0.1:1/nothing"])
    assert result.exit_code == 2
    assert "cannot open the store" in result.stderr and "Traceback" not in result.output + result.stderr


def test_an_unknown_job_or_document_is_a_404_page_that_says_so(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    Store(db).close()
    with serving(db) as base:
        r = httpx.get(f"{base}/jobs/job_nope", timeout=30)
        assert r.status_code == 404 and "No job &#39;job_nope&#39; in this store." in r.text


def test_an_action_posted_from_elsewhere_is_refused(tmp_path: Path) -> None:
    """Another site can make a browser post to a loopback address; without the confirmation page's nonce nothing
    happens."""
    db = str(tmp_path / "f.db")
    with Store(db) as store:
        store.create_job(Job(job_id="job_x", provider="anthropic", model="m", config={}))
    with serving(db) as base:
        r = httpx.post(f"{base}/jobs/job_x/cancel", data={"confirm": "yes"}, timeout=30)
        assert r.status_code == 403 and "did not come from this dashboard" in r.text
    with Store(db) as store:
        assert store.get_job("job_x").state.value == "created"  # type: ignore[union-attr]


def test_a_port_already_taken_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["ui", "--db", str(tmp_path / "f.db"), "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port picks another" in result.stderr


def test_attention_names_a_stuck_batch_the_gate_that_stopped_the_job_and_an_unknown_cost() -> None:
    from datetime import UTC, datetime, timedelta

    from freight.ui.breakdown import attention
    from freight.ui.queries import JobSummary

    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    job = JobSummary("job_a", "", "stopped", "anthropic", "m", "anthropic API", None, None, cost_usd=None)

    def batch(i: int, state: str, submitted_h: float, expires_h: float | None = None) -> dict[str, object]:
        expires = None if expires_h is None else now - timedelta(hours=expires_h)
        submitted = now - timedelta(hours=submitted_h)
        return {"id": i, "provider_batch_id": f"b{i}", "state": state, "submitted_at": submitted, "expires_at": expires}

    batches = [batch(1, "in_progress", 2), batch(2, "in_progress", 30), batch(3, "finalizing", 3, 0.5),
               batch(4, "ended", 50)]  # fmt: skip
    gate = [{"passed": False, "rate": 0.7, "min_first_pass": 0.9}]
    found = attention(job, batches, gate, [], now)
    assert [f.split(" (")[0] for f in found if f.startswith("batch")] == ["batch 2", "batch 3"]
    assert "past its expiry" in next(f for f in found if f.startswith("batch 3"))
    assert "the sample gate stopped the job: first-pass rate 70% (needs 90%)" in found
    assert any("cost is unknown" in f for f in found)
    job.state, job.cost_usd = "running", 0.0
    assert attention(job, [batch(1, "in_progress", 2)], gate, [], now) == []
