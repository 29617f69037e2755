"""`freight run --webhook-listen HOST:PORT --webhook-secret ...`: a verified batch event from `freight serve
--webhook` wakes the poll loop, which polls at once instead of at its next poll; forgeries change nothing."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from freight import api, signing
from freight.cli import app
from freight.providers import webhook_verifier
from freight.runner.listen import WebhookListener
from freight.server.testing import LocalServer, free_port
from freight.store import Store
from runner import held_engine  # tests/runner/held_engine.py: a batch cannot end until the test releases it

from .receiver import SECRET


def _docs(root: Path, n: int = 2) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(n):
        (docs / f"d{i}.txt").write_text(f"Invoice {i}.")
    return docs


def _listener() -> WebhookListener:
    verify = webhook_verifier("openai")
    assert verify is not None
    return WebhookListener("127.0.0.1", 0, SECRET, verify)


def test_a_batch_event_wakes_a_loop_that_would_sleep_a_minute(tmp_path: Path) -> None:
    held_engine.install()
    docs = _docs(tmp_path)
    with (
        _listener() as listener,
        LocalServer(
            tmp_path / "s.db", engine=held_engine.NAME, time_scale=0.005, webhooks=[listener.url], webhook_secret=SECRET
        ) as srv,
        Store(str(tmp_path / "f.db")) as store,
    ):
        try:
            opts = api.prepare(
                str(docs), provider="openai", model="scripted", base_url=srv.openai_base_url, api_key=srv.api_key
            )
            job = api.Job.open(opts, store=store, api_key=srv.api_key)
            done: dict[str, Any] = {}
            # A poll interval of 10 minutes (the loop caps its sleep at 60 s): without the webhook, nothing would
            # happen for a minute after the batch ends.
            runner = threading.Thread(
                target=lambda: done.update(report=job.run(poll_interval=600, wake=listener)), daemon=True
            )
            runner.start()
            assert held_engine.arrived.wait(30), "the batch never started"
            assert listener.idle.wait(30), "the loop never went to sleep on the running batch"
        finally:
            held_engine.release.set()  # the batch may end now; its event follows
        runner.join(timeout=45)
        assert not runner.is_alive(), "the job waited for its next poll: the webhook did not wake it"
        assert done["report"].state == "completed" and done["report"].succeeded == 2
        [batch] = store.batches(job.job_id)
        notes = [e["data"]["message"] for e in store.events(job.job_id, kind="note")]
        assert any(n.startswith(f"webhook batch.completed for batch {batch['provider_batch_id']}") for n in notes), (
            notes
        )
        [delivery] = srv.webhook_deliveries()
        assert delivery["state"] == "delivered" and delivery["batch_id"] == batch["provider_batch_id"]


def test_a_forged_or_foreign_event_does_not_wake_the_loop(tmp_path: Path) -> None:
    body = b'{"id":"evt_1","object":"event","type":"batch.completed","created_at":1,"data":{"id":"batch_x"}}'
    now = int(time.time())
    other = "whsec_" + base64.b64encode(b"not the secret").decode()
    with _listener() as listener, Store(str(tmp_path / "f.db")) as store:
        assert listener.receive(body, signing.headers(other, "evt_1", now, body)) == 400
        assert listener.receive(body + b" ", signing.headers(SECRET, "evt_1", now, body)) == 400
        assert listener.events.empty() and listener.rejected == 2
        # Over HTTP as well; and a body far larger than any event is refused unread.
        assert (
            httpx.post(listener.url, content=body, headers=signing.headers(other, "evt_1", now, body)).status_code
            == 400
        )
        host, port = listener.url.removeprefix("http://").rstrip("/").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:  # says 100 MB, sends none of it
            raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            assert raw.recv(64).startswith(b"HTTP/1.0 413")
        assert listener.events.empty()
        # A verified event for a batch that is not this job's is taken (200) but does not cut the sleep short.
        assert listener.receive(body, signing.headers(SECRET, "evt_1", now, body)) == 200
        notes: list[str] = []
        started = time.monotonic()
        listener.sleeper(store, "job_none", notes.append)(0.3)
        assert notes == [] and time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    "flags,provider,says",
    [
        (["--webhook-listen", "127.0.0.1:0"], "anthropic", "send no webhooks"),
        (["--webhook-listen", "127.0.0.1:0"], "openai", "--webhook-secret"),
        (["--webhook-listen", "localhost", "--webhook-secret", SECRET], "openai", "HOST:PORT"),
    ],
)
def test_webhook_listen_mistakes_are_usage_errors(tmp_path: Path, flags: list[str], provider: str, says: str) -> None:
    docs = _docs(tmp_path, 1)
    env = {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k", "FREIGHT_WEBHOOK_SECRET": ""}
    args = ["run", str(docs), "--provider", provider, "--model", "scripted", "--base-url", "http://127.0.0.1:9"]
    result = CliRunner().invoke(app, [*args, "--db", str(tmp_path / "f.db"), *flags], env=env)
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert not os.path.exists(tmp_path / "f.db") or not Store(str(tmp_path / "f.db")).list_jobs()


def test_without_any_webhook_the_run_still_ends_by_polling(tmp_path: Path) -> None:
    """The listener is a shortcut, never a dependency: a webhook that never comes costs only the poll interval."""
    docs = _docs(tmp_path, 2)
    port = free_port()
    with LocalServer(tmp_path / "s.db", time_scale=0.0005) as srv:  # sends no webhooks
        env = {"OPENAI_API_KEY": srv.api_key, "FREIGHT_WEBHOOK_SECRET": SECRET}
        args = ["run", str(docs), "--provider", "openai", "--model", "scripted", "--base-url", srv.openai_base_url]
        flags = ["--poll-interval", "0.05", "--webhook-listen", f"127.0.0.1:{port}", "--out", str(tmp_path / "out")]
        result = CliRunner().invoke(app, [*args, "--db", str(tmp_path / "f.db"), *flags], env=env)
    assert result.exit_code == 0, result.output
    assert f"listening for batch webhooks at http://127.0.0.1:{port}/" in result.output
    with Store(str(tmp_path / "f.db")) as store:
        (job,) = store.list_jobs()
        assert job.state.value == "completed" and store.item_counts(job.job_id) == {"succeeded": 2}
        assert not [e for e in store.events(job.job_id, kind="note") if "webhook" in e["data"]["message"]]
