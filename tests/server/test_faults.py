"""Planted faults: markers in a request's text, and the server-wide `--faults SPEC`, each seen through the SDKs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from serve_helpers import a_request, jsonl, o_line, upload, wait_anthropic, wait_openai

from freight.server.faults import FaultSpec, FaultSpecError
from freight.server.testing import LocalServer

FAST = 0.0005


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, object]:
    return {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}


def run_batch(client: anthropic.Anthropic, reqs: list[object]) -> dict[str, object]:
    batch = client.messages.batches.create(requests=reqs)  # type: ignore[arg-type]
    wait_anthropic(client, batch.id)
    return results(client, batch.id)


@pytest.fixture
def faulty(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "s.db", time_scale=FAST, faults=request.param) as srv:
        yield srv


def clients(srv: LocalServer, retries: int = 0) -> tuple[anthropic.Anthropic, openai.OpenAI]:
    return (
        anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=retries),
        openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=retries),
    )


# --- markers ------------------------------------------------------------------------------------------------------


def test_marker_fails_the_first_attempt_only_and_always_fails_every_time(claude: anthropic.Anthropic) -> None:
    reqs = [
        a_request("once", "hello [[fault:overloaded]]"),
        a_request("always", "hello [[fault:invalid_request:always]]"),
        a_request("fine", "hello"),
    ]
    first = run_batch(claude, reqs)  # type: ignore[arg-type]
    assert first["once"].error.error.type == "overloaded_error"  # type: ignore[attr-defined]
    assert first["always"].error.error.type == "invalid_request_error"  # type: ignore[attr-defined]
    assert first["fine"].type == "succeeded"  # type: ignore[attr-defined]
    second = run_batch(claude, [a_request("once", "hello [[fault:overloaded]]"), reqs[1]])  # type: ignore[list-item]
    assert second["once"].type == "succeeded"  # type: ignore[attr-defined]
    assert second["always"].type == "errored"  # type: ignore[attr-defined]


def test_labels_make_markers_distinct(claude: anthropic.Anthropic) -> None:
    got = run_batch(
        claude,
        [a_request("a", "[[fault:server_error#doc1]]"), a_request("b", "[[fault:server_error#doc2]]")],  # type: ignore[list-item]
    )
    assert {k: v.error.error.type for k, v in got.items()} == {"a": "api_error", "b": "api_error"}  # type: ignore[attr-defined]


def test_expired_tokens_and_malformed_json_markers(claude: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    got = run_batch(
        claude,
        [
            a_request("exp", "x [[fault:expired]]"),
            a_request("long", "x [[fault:tokens=50]]", max_tokens=10),
            a_request(
                "json",
                "name: Ada [[fault:malformed_json]]",
                output_config={"format": {"type": "json_schema", "schema": schema}},
            ),
        ],  # type: ignore[list-item]
    )
    assert got["exp"].type == "expired"  # type: ignore[attr-defined]
    long = got["long"].message  # type: ignore[attr-defined]
    assert long.stop_reason == "max_tokens" and long.usage.output_tokens == 10
    with pytest.raises(json.JSONDecodeError):
        json.loads(got["json"].message.content[0].text)  # type: ignore[attr-defined]
    again = run_batch(
        claude,
        [
            a_request(
                "json",
                "name: Ada [[fault:malformed_json]]",
                output_config={"format": {"type": "json_schema", "schema": schema}},
            )
        ],
    )  # type: ignore[list-item]
    assert json.loads(again["json"].message.content[0].text) == {"name": "Ada [[fault:malformed_json]]"}  # type: ignore[attr-defined]


def test_sync_rate_limited_marker_is_a_429_the_sdk_retries_past(server: LocalServer) -> None:
    no_retry, _ = clients(server)
    with pytest.raises(anthropic.RateLimitError) as err:
        no_retry.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "[[fault:rate_limited#s]]"}]
        )
    assert err.value.response.headers["retry-after"] == "1"
    retrying, _ = clients(server, retries=2)
    reply = retrying.messages.create(
        model="m", max_tokens=10, messages=[{"role": "user", "content": "[[fault:overloaded#t]]"}]
    )
    assert reply.content[0].text.startswith("echo:")  # type: ignore[union-attr]
    assert sum(r["custom_id"] is None for r in server.records()) == 3  # 429, then 529 + its successful retry


def test_openai_sync_overloaded_marker_is_503(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "[[fault:overloaded]]"}])
    assert err.value.status_code == 503


# --- the SPEC -----------------------------------------------------------------------------------------------------


def test_spec_parsing_names_the_known_keys() -> None:
    spec = FaultSpec.parse("error_rate=0.05, seed=7,http429=0.1")
    assert (spec.error_rate, spec.seed, spec.http429) == (0.05, 7, 0.1)
    with pytest.raises(FaultSpecError, match="known keys: seed, error_rate"):
        FaultSpec.parse("eror_rate=0.1")
    with pytest.raises(FaultSpecError, match="between 0 and 1"):
        FaultSpec.parse("http429=2")


@pytest.mark.parametrize("faulty", ["error_rate=0.5,seed=3"], indirect=True)
def test_error_rate_is_seeded_and_repeatable(faulty: LocalServer, tmp_path: Path) -> None:
    client, _ = clients(faulty)
    reqs = [a_request(f"r{i}", "x") for i in range(40)]
    first = run_batch(client, reqs)  # type: ignore[arg-type]
    errored = {k for k, v in first.items() if v.type == "errored"}  # type: ignore[attr-defined]
    assert 5 < len(errored) < 35
    kinds = {first[k].error.error.type for k in errored}  # type: ignore[attr-defined]
    assert kinds <= {"overloaded_error", "api_error", "rate_limit_error"}


@pytest.mark.parametrize("faulty", ["http429=1,retry_after=0.01"], indirect=True)
def test_http429_on_the_api_itself(faulty: LocalServer) -> None:
    claude, oai = clients(faulty)
    with pytest.raises(anthropic.RateLimitError) as a_err:
        claude.messages.batches.list()
    assert a_err.value.response.headers["retry-after-ms"] == "10"
    assert a_err.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(openai.RateLimitError) as o_err:
        oai.batches.list()
    assert o_err.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("faulty", ["http429=0.5,http5xx=0.2,retry_after=0.01,seed=1"], indirect=True)
def test_sdk_retries_get_through_random_api_faults(faulty: LocalServer) -> None:
    claude, oai = clients(faulty, retries=12)
    batch = claude.messages.batches.create(requests=[a_request("a", "x")])
    assert wait_anthropic(claude, batch.id).request_counts.succeeded == 1
    assert oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices


@pytest.mark.parametrize("faulty", ["http5xx=1,seed=2"], indirect=True)
def test_http5xx_on_the_api_itself(faulty: LocalServer) -> None:
    claude, oai = clients(faulty)
    statuses = set()
    for _ in range(20):  # the seeded draws of seed 2 give both kinds within 20 calls
        with pytest.raises(anthropic.InternalServerError) as err:
            claude.messages.batches.list()
        statuses.add(err.value.status_code)
    assert statuses == {500, 529}
    with pytest.raises(openai.InternalServerError):
        oai.batches.list()


@pytest.mark.parametrize("faulty", ["slow=1,slow_seconds=0.6"], indirect=True)
def test_slow_responses_time_out_a_short_client_timeout(faulty: LocalServer) -> None:
    claude, _ = clients(faulty)
    with pytest.raises(anthropic.APITimeoutError):
        claude.with_options(timeout=0.2).messages.batches.list()
    assert claude.with_options(timeout=5).messages.batches.list().data == []


@pytest.mark.parametrize("faulty", ["stuck_finalizing=2000"], indirect=True)  # 1 s at this time scale
def test_batch_stuck_in_finalizing(faulty: LocalServer) -> None:
    _, oai = clients(faulty)
    batch = oai.batches.create(
        input_file_id=upload(oai, [o_line("a", "x")]), endpoint="/v1/chat/completions", completion_window="24h"
    )
    seen: set[str] = set()
    start = time.monotonic()
    while (b := oai.batches.retrieve(batch.id)).status != "completed":
        seen.add(b.status)
        time.sleep(0.02)
    assert "finalizing" in seen and time.monotonic() - start >= 0.9


def test_batch_stuck_in_canceling(tmp_path: Path) -> None:
    # A slow clock: the batch queues for 3.5 s before any request runs, so the cancel, sent right after the create,
    # lands first even on a loaded machine. Canceling normally takes 1 s here; stuck_canceling adds 1 s. Only lower
    # bounds on time are asserted: a slow machine makes waits longer, never shorter.
    with LocalServer(tmp_path / "s.db", time_scale=0.1, faults="stuck_canceling=10") as srv:
        claude, _ = clients(srv)
        batch = claude.messages.batches.create(requests=[a_request(f"r{i}", "x") for i in range(3)])
        start = time.monotonic()
        assert claude.messages.batches.cancel(batch.id).processing_status == "canceling"
        ended = wait_anthropic(claude, batch.id)
        assert time.monotonic() - start >= 1.9  # 10 s to cancel + 10 s stuck, at 0.1
        assert ended.request_counts.canceled == 3


@pytest.mark.parametrize("faulty", ["drop_results=1"], indirect=True)
def test_results_download_drops_mid_stream(faulty: LocalServer) -> None:
    claude, _ = clients(faulty)
    batch = claude.messages.batches.create(requests=[a_request(f"r{i}", "x") for i in range(10)])
    wait_anthropic(claude, batch.id)
    received: list[str] = []
    with pytest.raises(Exception) as err:  # the SDK surfaces the transport's own error mid-iteration
        for r in claude.messages.batches.results(batch.id):
            received.append(r.custom_id)
    assert "RemoteProtocolError" in type(err.value).__name__ or "incomplete" in str(err.value).lower()
    assert 0 < len(received) < 10


@pytest.mark.parametrize("faulty", ["malformed_results=1"], indirect=True)
def test_a_malformed_line_in_the_results(faulty: LocalServer) -> None:
    claude, oai = clients(faulty)
    batch = claude.messages.batches.create(requests=[a_request(f"r{i}", "x") for i in range(4)])
    wait_anthropic(claude, batch.id)
    with pytest.raises(json.JSONDecodeError):
        list(claude.messages.batches.results(batch.id))
    ob = oai.batches.create(
        input_file_id=upload(oai, [o_line("a", "x"), o_line("b", "y")]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    done = wait_openai(oai, ob.id)
    text = oai.files.content(done.output_file_id).text  # type: ignore[arg-type]
    lines = text.splitlines()
    assert len(lines) == 2
    with pytest.raises(json.JSONDecodeError):
        jsonl(text)


@pytest.mark.parametrize("faulty", ["window=10"], indirect=True)  # shorter than the queue: nothing gets processed
def test_expiry_of_a_whole_batch(faulty: LocalServer) -> None:
    claude, oai = clients(faulty)
    batch = claude.messages.batches.create(requests=[a_request(f"r{i}", "x") for i in range(5)])
    ended = wait_anthropic(claude, batch.id)
    assert ended.request_counts.expired == 5
    assert {r.result.type for r in claude.messages.batches.results(batch.id)} == {"expired"}
    ob = oai.batches.create(
        input_file_id=upload(oai, [o_line("a", "x")]), endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_openai(oai, ob.id)
    assert done.status == "expired" and done.expired_at is not None


def test_openai_expired_requests_are_in_the_error_file(oai: openai.OpenAI) -> None:
    lines = [o_line("gone", "x [[fault:expired]]"), o_line("ok", "x")]
    done = wait_openai(
        oai,
        oai.batches.create(
            input_file_id=upload(oai, lines), endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    (err,) = jsonl(oai.files.content(done.error_file_id).text)  # type: ignore[arg-type]
    assert err["custom_id"] == "gone" and err["response"] is None and err["error"]["code"] == "batch_expired"
