"""`freight run --notify URL`: signed job events from an outbox in the store, through the CLI. A runner killed between
the job's end and the POST, then resumed, delivers exactly one `job.completed`; a resumed job never sends twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.server.testing import LocalServer
from freight.store import Store

from .receiver import SECRET, Receiver


def _freight(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "freight", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with LocalServer(tmp_path / "serve.db", time_scale=0.0002) as srv:
        yield srv


def _docs(root: Path, texts: dict[str, str]) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for name, text in texts.items():
        (docs / f"{name}.txt").write_text(text)
    return docs


def _run_args(tmp_path: Path, docs: Path, server: LocalServer, url: str) -> list[str]:
    return [
        "run", str(docs), "--provider", "anthropic", "--model", "scripted", "--base-url", server.base_url,
        "--db", str(tmp_path / "f.db"), "--poll-interval", "0.05", "--out", str(tmp_path / "out"), "--notify", url,
    ]  # fmt: skip


def _cli(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """In-process (no interpreter to start): what the tests that kill nothing use."""
    result = CliRunner().invoke(app, args, env=env)
    return result.exit_code, result.output


def _events(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(d.body) for d in receiver.deliveries if d.status == 200]


def test_killed_between_the_end_and_the_post_then_resumed_delivers_exactly_one(
    tmp_path: Path, server: LocalServer
) -> None:
    docs = _docs(tmp_path, {f"d{i}": f"Invoice {i}." for i in range(3)})
    env = {**os.environ, "ANTHROPIC_API_KEY": server.api_key, "FREIGHT_NOTIFY_SECRET": SECRET}
    with Receiver() as receiver:
        args = _run_args(tmp_path, docs, server, receiver.url)
        killed = _freight(args, {**env, "FREIGHT_CRASH_AT": "notify.before_post"})
        assert killed.returncode == -9, killed.stderr
        with Store(str(tmp_path / "f.db")) as store:
            (job,) = store.list_jobs()
            assert job.state.value == "completed"
            [queued] = store.notifications(job.job_id)
            assert (queued["type"], queued["state"]) == ("job.completed", "pending")
        assert receiver.deliveries == [], "killed before the POST"

        # `freight resume` of the ended job sends what was left, though there is nothing left to run (in-process
        # from here on: only the run that is killed needs a process of its own)...
        env = {"ANTHROPIC_API_KEY": server.api_key, "FREIGHT_NOTIFY_SECRET": SECRET}
        code, out = _cli(["resume", job.job_id, "--db", str(tmp_path / "f.db")], env)
        assert "nothing to resume" in out
        [event] = _events(receiver)
        # ...and the same command again resumes the job, which is done: nothing new is announced.
        code, out = _cli(args, env)
        assert code == 0, out

    assert len(receiver.deliveries) == 1
    assert event["type"] == "job.completed" and event["id"] == queued["event_id"]
    report = event["data"]["report"]
    assert (report["job"], report["state"], report["succeeded"], report["documents"]) == (job.job_id, "completed", 3, 3)
    # One receiver verifies freight serve's batch events and freight's job events: the same signature.
    delivery = receiver.deliveries[0]
    openai.OpenAI(api_key="not-used").webhooks.verify_signature(delivery.body, delivery.headers, secret=SECRET)
    with Store(str(tmp_path / "f.db")) as store:
        [row] = store.notifications(job.job_id)
        assert row["state"] == "delivered" and row["attempts"] == 1


def test_a_receiver_down_keeps_the_event_until_a_later_run_delivers_it(tmp_path: Path, server: LocalServer) -> None:
    docs = _docs(tmp_path, {"a": "Invoice."})
    env = {"ANTHROPIC_API_KEY": server.api_key, "FREIGHT_NOTIFY_SECRET": SECRET}
    with Receiver(fail_first=3) as receiver:  # `freight run` tries 3 times, then keeps it for the next run
        args = _run_args(tmp_path, docs, server, receiver.url)
        code, out = _cli(args, env)
        assert code == 0, out
        assert "not delivered yet" in out
        assert [d.status for d in receiver.deliveries] == [500] * 3
        code, out = _cli(args, env)
        assert code == 0, out
    assert [d.status for d in receiver.deliveries] == [500] * 3 + [200]
    assert len({d.headers["webhook-id"] for d in receiver.deliveries}) == 1, "a retry is the same event"


def test_a_gate_stop_is_job_needs_attention_and_a_failed_job_is_job_failed(tmp_path: Path, server: LocalServer) -> None:
    env = {"ANTHROPIC_API_KEY": server.api_key}
    with Receiver() as receiver:
        bad = _docs(tmp_path, {f"d{i}": f"Invoice [[fault:invalid_request:always#i{i}]] {i}." for i in range(3)})
        args = [*_run_args(tmp_path, bad, server, receiver.url), "--notify-secret", SECRET]
        code, out = _cli([*args, "--sample", "--sample-size", "2"], env)
        assert code == 1, out
        code, out = _cli([*args, "--no-sample"], env)
        assert code == 0, out
        events = _events(receiver)
    assert [e["type"] for e in events] == ["job.needs_attention", "job.failed"]
    assert events[0]["data"]["reason"] == "sample_gate" and events[0]["data"]["report"]["state"] == "stopped"
    assert events[1]["data"]["report"]["failed"] == 3


def test_notify_without_a_secret_is_refused_before_anything_is_sent(tmp_path: Path, server: LocalServer) -> None:
    docs = _docs(tmp_path, {"a": "Invoice."})
    env = {"ANTHROPIC_API_KEY": server.api_key, "FREIGHT_NOTIFY_SECRET": ""}
    code, out = _cli(_run_args(tmp_path, docs, server, "http://127.0.0.1:9/hook"), env)
    assert code == 2 and "--notify-secret" in out and "Traceback" not in out
    assert server.records() == []
    code, out = _cli([*_run_args(tmp_path, docs, server, "localhost/hook"), "--notify-secret", SECRET], env)
    assert code == 2 and "http://" in out


def test_the_sdk_unwraps_a_job_event_into_an_unrelated_class_so_receivers_verify_then_parse() -> None:
    """The SDK's `unwrap` knows only OpenAI's event types: a `job.completed` comes back as whatever model of its
    union it tries first (the fields are kept). Receivers of freight's job events call `verify_signature` and parse
    the JSON themselves (docs/webhooks.md)."""
    import time

    from freight import signing

    body = b'{"id":"evt_1","object":"event","type":"job.completed","created_at":1,"data":{"id":"job_1"}}'
    headers = signing.headers(SECRET, "evt_1", int(time.time()), body)
    sdk = openai.OpenAI(api_key="not-used")
    event = sdk.webhooks.unwrap(body, headers, secret=SECRET)
    assert event.type == "job.completed" and event.data.id == "job_1"  # type: ignore[comparison-overlap]
    assert "Job" not in type(event).__name__
    sdk.webhooks.verify_signature(body, headers, secret=SECRET)  # raises on a bad signature


def test_a_job_stopped_by_an_error_that_cannot_heal_sends_job_stopped(tmp_path: Path, server: LocalServer) -> None:
    docs = _docs(tmp_path, {"a": "Invoice."})
    env = {"ANTHROPIC_API_KEY": "a-revoked-key", "FREIGHT_NOTIFY_SECRET": SECRET}
    with Receiver() as receiver:
        code, out = _cli(_run_args(tmp_path, docs, server, receiver.url), env)
        assert code != 0 and "freight resume" in out, out
        [event] = _events(receiver)
    assert (event["type"], event["data"]["reason"]) == ("job.stopped", "error")
    assert event["data"]["report"]["state"] == "stopped" and event["data"]["message"]
