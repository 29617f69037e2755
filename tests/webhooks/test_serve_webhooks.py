"""`freight serve --webhook URL --webhook-secret whsec_...`: every OpenAI / Azure batch end reaches a receiver written
with only the official `openai` SDK, which verifies it; retries keep the webhook-id; forgeries are rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.server.testing import LocalServer

from .receiver import SECRET, Receiver

AZURE_VERSION = "2024-10-21"


def line(custom_id: str, text: str = "hello") -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def submit(client: openai.OpenAI, lines: list[str]) -> str:
    file_id = client.files.create(file=("in.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch").id
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id


def by_batch(events: list[Any]) -> dict[str, str]:
    return {e.data.id: e.type for e in events}


def test_every_batch_end_reaches_both_receivers_verified_by_the_sdk(tmp_path: Path) -> None:
    with (
        Receiver() as first,
        Receiver() as second,
        LocalServer(
            tmp_path / "s.db", time_scale=0.01, workers=1, webhooks=[first.url, second.url], webhook_secret=SECRET
        ) as srv,
    ):
        oai = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=0)
        azure = openai.AzureOpenAI(
            azure_endpoint=srv.azure_endpoint, api_key=srv.api_key, api_version=AZURE_VERSION, max_retries=0
        )
        completed = submit(oai, [line(f"r{i}") for i in range(3)])
        failed = submit(oai, [line("a"), "{not json"])
        cancelled = submit(oai, [line(f"c{i}") for i in range(50)])
        oai.batches.cancel(cancelled)
        on_azure = submit(azure, [line("z")])
        want = {
            completed: "batch.completed",
            failed: "batch.failed",
            cancelled: "batch.cancelled",
            on_azure: "batch.completed",
        }

        for receiver in (first, second):
            events = receiver.wait_for(lambda evs: len(evs) >= len(want))
            assert by_batch(events) == want
            assert len(events) == len(want), "one event per batch end, no more"
            assert {type(e).__name__ for e in events} == {
                "BatchCompletedWebhookEvent", "BatchFailedWebhookEvent", "BatchCancelledWebhookEvent"
            }  # fmt: skip
            assert all(d.status == 200 for d in receiver.deliveries)
        # The receiver learns the batch's state by retrieving it, as the event carries only its id.
        assert oai.batches.retrieve(completed).status == "completed"
        assert oai.batches.retrieve(cancelled).status == "cancelled"
        assert azure.batches.retrieve(on_azure).status == "completed"
        # One event, one webhook-id, whichever URL it went to.
        ids = {d.headers["webhook-id"] for d in first.deliveries}
        assert ids == {d.headers["webhook-id"] for d in second.deliveries} and len(ids) == 4
        # Every attempt is in the server's store.
        log = srv.webhook_deliveries()
        assert len(log) == 8 and all(d["state"] == "delivered" and len(d["attempt_log"]) == 1 for d in log)


def test_an_expired_batch_sends_batch_expired(tmp_path: Path) -> None:
    # A completion window shorter than the queue: the batch expires before it starts.
    with (
        Receiver() as receiver,
        LocalServer(
            tmp_path / "s.db", time_scale=0.01, faults="window=5", webhooks=[receiver.url], webhook_secret=SECRET
        ) as srv,
    ):
        oai = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=0)
        expired = submit(oai, [line("x")])
        [event] = receiver.wait_for(lambda evs: len(evs) >= 1)
        assert (event.type, event.data.id) == ("batch.expired", expired)
        assert oai.batches.retrieve(expired).status == "expired"


def test_a_receiver_down_for_its_first_deliveries_gets_the_event_with_the_same_id(tmp_path: Path) -> None:
    with (
        Receiver(fail_first=3) as receiver,
        LocalServer(
            tmp_path / "s.db", time_scale=0.001, webhooks=[receiver.url], webhook_secret=SECRET, webhook_backoff=0.05
        ) as srv,
    ):
        oai = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=0)
        batch_id = submit(oai, [line("a")])
        [event] = receiver.wait_for(lambda evs: len(evs) >= 1)
        assert event.data.id == batch_id
        assert [d.status for d in receiver.deliveries] == [500, 500, 500, 200]
        assert {d.headers["webhook-id"] for d in receiver.deliveries} == {event.id}
        assert len({d.body for d in receiver.deliveries}) == 1, "a retry sends the same bytes"
        [logged] = srv.webhook_deliveries()
        assert logged["state"] == "delivered" and logged["attempts"] == 4
        assert [a["status"] for a in logged["attempt_log"]] == [500, 500, 500, 200]


def test_a_wrong_secret_or_a_forged_body_is_rejected_by_the_sdk(tmp_path: Path) -> None:
    with (
        Receiver() as receiver,
        LocalServer(tmp_path / "s.db", time_scale=0.001, webhooks=[receiver.url], webhook_secret=SECRET) as srv,
    ):
        oai = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=0)
        submit(oai, [line("a")])
        receiver.wait_for(lambda evs: len(evs) >= 1)
    [real] = receiver.deliveries
    sdk = openai.OpenAI(api_key="not-used")
    assert sdk.webhooks.unwrap(real.body, real.headers, secret=SECRET).type == "batch.completed"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(real.body, real.headers, secret="whsec_" + base64.b64encode(b"another secret").decode())
    forged = real.body.replace(b"batch.completed", b"batch.cancelled")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(forged, real.headers, secret=SECRET)
    # A forgery sent to the receiver itself is answered 400, never acted on.
    assert receiver.handle(forged, real.headers) == 400


def _signature(secret: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


def test_where_the_sdk_and_the_spec_disagree_the_sdk_wins() -> None:
    """specs/webhooks.md says the header holds `v1,<base64>` values; the SDK also accepts a bare `<base64>` (it strips
    `v1,` when present and compares whatever is left). freight always sends the `v1,` form, which both accept."""
    sdk = openai.OpenAI(api_key="not-used")
    body = b'{"id":"evt_1","object":"event","type":"batch.completed","created_at":1,"data":{"id":"batch_1"}}'
    ts = str(int(time.time()))
    bare = _signature(base64.b64decode(SECRET[6:]), "evt_1", ts, body)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": ts, "webhook-signature": bare}
    assert sdk.webhooks.unwrap(body, headers, secret=SECRET).data.id == "batch_1"
    # Several signatures (a secret rotation): any match verifies.
    headers["webhook-signature"] = f"v1,{base64.b64encode(b'x' * 32).decode()} v1,{bare}"
    assert sdk.webhooks.unwrap(body, headers, secret=SECRET).type == "batch.completed"


def test_serve_refuses_a_webhook_without_a_secret_or_with_a_bad_url(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"FREIGHT_SERVE_API_KEY": "k", "FREIGHT_SERVE_WEBHOOK_SECRET": ""}
    no_secret = runner.invoke(app, ["serve", "--db", str(tmp_path / "s.db"), "--webhook", "http://x/y"], env=env)
    assert no_secret.exit_code == 2 and "--webhook-secret" in no_secret.output
    assert no_secret.exception is None or isinstance(no_secret.exception, SystemExit)
    bad_url = runner.invoke(
        app, ["serve", "--db", str(tmp_path / "s.db"), "--webhook", "x/y", "--webhook-secret", SECRET], env=env
    )
    assert bad_url.exit_code == 2 and "http://" in bad_url.output
    bad_secret = runner.invoke(
        app,
        ["serve", "--db", str(tmp_path / "s.db"), "--webhook", "http://x/y", "--webhook-secret", "whsec_!!"],
        env=env,
    )
    assert bad_secret.exit_code == 2 and "not base64" in bad_secret.output


@pytest.mark.slow
def test_an_event_still_pending_when_the_server_is_killed_is_sent_after_the_restart(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Receiver(fail_first=1) as receiver:
        # The first attempt fails, and the next would wait 10 minutes: the server is killed before it.
        first = LocalServer(db, subprocess=True, time_scale=0.001, webhooks=[receiver.url], webhook_secret=SECRET)
        first.webhook_backoff = 600.0
        with first as srv:
            oai = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=0)
            batch_id = submit(oai, [line("a")])
            deadline = time.monotonic() + 60
            while not (log := srv.webhook_deliveries()) or log[0]["attempts"] < 1:
                assert time.monotonic() < deadline, "no delivery was attempted"
                time.sleep(0.05)
            srv.kill()
        assert receiver.verified() == []
        again = LocalServer(db, subprocess=True, port=first.port, webhooks=[receiver.url], webhook_secret=SECRET)
        again.webhook_backoff = 600.0
        with again as srv:
            [event] = receiver.wait_for(lambda evs: len(evs) >= 1)
            [logged] = srv.webhook_deliveries()
    assert event.data.id == batch_id and event.id == logged["event_id"]
    assert [a["status"] for a in logged["attempt_log"]] == [500, 200]
