"""The contract every adapter passes: the same tests, against `freight serve` over loopback, through the real SDKs.

Fault markers are "first attempt only" per exact marker text across the server's whole database, so every marker
here carries a label naming its test and provider (`[[fault:overloaded#sync-anthropic]]`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from freight.domain import (
    BatchState,
    Canceled,
    Errored,
    ErrorKind,
    Expired,
    Message,
    Request,
    Result,
    StopReason,
    Succeeded,
)
from freight.providers import Provider, ProviderError, RequestRefused, get_provider
from freight.providers.retry import RetryPolicy
from freight.server.testing import LocalServer

NAMES = ["anthropic", "openai", "azure", "gemini"]
# What each provider calls a prompt over the context window, and the HTTP statuses it answers with.
OVERFLOW_RAW = {
    "anthropic": "invalid_request_error",
    "openai": "context_length_exceeded",
    "azure": "context_length_exceeded",
    "gemini": "INVALID_ARGUMENT",
}
OVERLOADED_STATUS = {"anthropic": 529, "openai": 503, "azure": 503, "gemini": 503}
# Gemini answers a wrong key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not 401.
AUTH_STATUS = {"anthropic": 401, "openai": 401, "azure": 401, "gemini": 400}
# Results faults (dropped, malformed) strike results downloads; Gemini's inline results travel inside the batch
# resource, so the tests of those faults send Gemini's batches as a file, whose results come back as a file.
FILE_RESULTS: dict[str, dict[str, Any]] = {"gemini": {"inline_max_bytes": 0}}
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "year"],
}
# The scripted engine's window for this model name is 2,000 tokens (ceil(len(text) / 4) each).
SMALL_MODEL = "scripted-ctx-2000"
KEY = "sk-freight-contract-7f3a9c"  # distinctive, so a leak into logs or messages cannot hide


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    # 0.005: a batch's queue, work and finalizing take ~0.3 s, and its 24 h window ~7 min (never reached here).
    with LocalServer(tmp_path_factory.mktemp("serve") / "server.db", time_scale=0.005, api_key=KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    faults = "seed=7,http429=0.4,http5xx=0.25,retry_after=0.05,drop_results=0.5,malformed_results=1"
    with LocalServer(tmp_path_factory.mktemp("faulty") / "server.db", time_scale=0.005, faults=faults) as srv:
        yield srv


@pytest.fixture(scope="module")
def dropping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer(tmp_path_factory.mktemp("drop") / "server.db", time_scale=0.005, faults="drop_results=1") as srv:
        yield srv


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    # Every API call answers after 0.4 s: past the 0.15 s timeout the harness gives these adapters.
    faults = "slow=1,slow_seconds=0.4"
    with LocalServer(tmp_path_factory.mktemp("slow") / "server.db", time_scale=0.005, faults=faults) as srv:
        yield srv


class Harness:
    """An adapter from the entry point, talking to a server, with its backoff sleeps recorded instead of slept."""

    def __init__(self, name: str, srv: LocalServer, attempts: int = 4, api_key: str | None = None, **kw: Any) -> None:
        self.name = name
        self.srv = srv
        self.sleeps: list[float] = []
        base_url = srv.url_for(name)
        policy = RetryPolicy(attempts=attempts, sleep=self.sleeps.append)
        self.provider: Provider = get_provider(
            name, base_url=base_url, api_key=api_key or srv.api_key, retry=policy, **kw
        )

    def sync_receipts(self) -> int:
        return sum(1 for r in self.srv.records() if r["batch_id"] is None and r["dialect"] == self.name)

    def wait(self, batch_id: str, timeout: float = 30.0) -> BatchState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.provider.get_batch(batch_id).state
            if state.terminal:
                return state
            time.sleep(0.05)
        raise AssertionError(f"batch {batch_id} did not end within {timeout} s")

    def results(self, batch_id: str) -> dict[str, Result]:
        out: dict[str, Result] = {}
        for result in self.provider.iter_results(batch_id):
            assert result.custom_id not in out, f"{result.custom_id} came back twice"
            out[result.custom_id] = result
        return out


def ask(custom_id: str, text: str, *, model: str = SMALL_MODEL, max_tokens: int = 100, **kw: Any) -> Request:
    return Request(
        custom_id=custom_id, model=model, max_tokens=max_tokens, messages=[Message(role="user", content=text)], **kw
    )


@pytest.fixture(params=NAMES)
def h(request: pytest.FixtureRequest, server: LocalServer) -> Harness:
    return Harness(request.param, server)


# --- synchronous ------------------------------------------------------------------------------------------------


def test_send_returns_the_reply_with_usage(h: Harness) -> None:
    out = h.provider.send(ask("s1", "Name one river."))
    assert isinstance(out, Succeeded)
    assert out.text
    assert out.stop_reason is StopReason.END
    assert out.usage.input_tokens > 0 and out.usage.output_tokens > 0
    assert out.parsed is None  # no JSON was asked for


def test_send_reports_truncation_at_max_tokens(h: Harness) -> None:
    out = h.provider.send(ask("s2", f"Write at length [[fault:tokens=300:always#trunc-{h.name}]]", max_tokens=20))
    assert isinstance(out, Succeeded)
    assert out.stop_reason is StopReason.MAX_TOKENS
    assert out.usage.output_tokens == 20


def test_send_recognizes_context_overflow_and_keeps_the_raw_error(h: Harness) -> None:
    before = h.sync_receipts()
    out = h.provider.send(ask("s3", "word " * 2000))  # ~2,500 tokens into a 2,000-token window
    assert isinstance(out, Errored)
    assert out.kind is ErrorKind.CONTEXT_OVERFLOW
    assert out.raw_type == OVERFLOW_RAW[h.name]
    assert "2000" in out.message  # the provider's own words are kept beside the kind
    assert h.sync_receipts() - before == 1 and h.sleeps == []  # permanent: not retried


def test_send_invalid_request_is_an_errored_outcome_at_once(h: Harness) -> None:
    before = h.sync_receipts()
    out = h.provider.send(ask("s4", f"bad [[fault:invalid_request#sync-{h.name}]]"))
    assert isinstance(out, Errored) and out.kind is ErrorKind.INVALID_REQUEST
    assert h.sync_receipts() - before == 1 and h.sleeps == []


@pytest.mark.parametrize("kind", ["overloaded", "server_error", "rate_limited"])
def test_send_retries_a_transient_failure_and_succeeds(h: Harness, kind: str) -> None:
    before = h.sync_receipts()
    out = h.provider.send(ask("s5", f"hello [[fault:{kind}#sync-{h.name}]]"))
    assert isinstance(out, Succeeded)
    assert h.sync_receipts() - before == 2  # the failed first attempt and the retry, both seen by the server
    assert len(h.sleeps) == 1
    if kind == "rate_limited":
        assert h.sleeps == [1.0]  # the server's retry-after, waited exactly


def test_send_gives_up_on_a_persistent_overload_with_the_right_kind(h: Harness) -> None:
    before = h.sync_receipts()
    with pytest.raises(ProviderError) as info:
        h.provider.send(ask("s6", f"hello [[fault:overloaded:always#sync-{h.name}]]"))
    assert info.value.kind is ErrorKind.OVERLOADED
    assert info.value.status == OVERLOADED_STATUS[h.name]
    assert h.sync_receipts() - before == 4  # RetryPolicy(attempts=4)
    assert len(h.sleeps) == 3


def test_send_asks_for_json_and_parses_it(h: Harness) -> None:
    out = h.provider.send(ask("s7", "A film, as JSON.", output_schema=SCHEMA))
    assert isinstance(out, Succeeded)
    assert isinstance(out.parsed, dict) and {"title", "year"} <= out.parsed.keys()
    assert json.loads(out.text) == out.parsed


def test_send_leaves_parsed_empty_when_the_reply_is_not_json(h: Harness) -> None:
    out = h.provider.send(ask("s8", f"A film [[fault:malformed_json#sync-{h.name}]]", output_schema=SCHEMA))
    assert isinstance(out, Succeeded)
    assert out.text and out.parsed is None  # the runner's validator decides what to do with it


def test_a_wrong_key_is_an_auth_error_at_once(h: Harness) -> None:
    bad = Harness(h.name, h.srv, api_key="not-the-key")
    with pytest.raises(ProviderError) as info:
        bad.provider.send(ask("s9", "hello"))
    assert info.value.kind is ErrorKind.AUTH and info.value.status == AUTH_STATUS[h.name]
    assert bad.sleeps == []
    assert "not-the-key" not in str(info.value)


def test_the_key_never_reaches_logs_or_errors(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h.provider.send(ask("k1", "hello"))
    h.provider.send(ask("k2", "word " * 2000))  # an Errored outcome, with the provider's message
    batch = h.provider.submit_batch([ask("k3", "hello")])
    with pytest.raises(ProviderError) as info:
        h.provider.get_batch(batch.provider_batch_id + "x")
    assert caplog.records, "the SDKs log at DEBUG; this test must see their output"
    assert KEY not in caplog.text
    assert KEY not in str(info.value) and KEY not in repr(h.provider)


def test_an_unknown_batch_is_not_found(h: Harness) -> None:
    with pytest.raises(ProviderError) as info:
        h.provider.get_batch("msgbatch_nope" if h.name == "anthropic" else "batch_nope")
    assert info.value.kind is ErrorKind.NOT_FOUND and h.sleeps == []


# --- batches ----------------------------------------------------------------------------------------------------


def test_a_batch_runs_end_to_end_with_every_planted_outcome(h: Harness) -> None:
    tag = f"batch-{h.name}"

    def errored(kind: ErrorKind) -> Callable[[Any], bool]:
        return lambda o: isinstance(o, Errored) and o.kind is kind

    def truncated(o: Any) -> bool:
        return isinstance(o, Succeeded) and o.stop_reason is StopReason.MAX_TOKENS and o.usage.output_tokens == 20

    plan: dict[str, tuple[str, Callable[[Any], bool]]] = {
        "plain": ("Name a mountain.", lambda o: isinstance(o, Succeeded) and o.stop_reason is StopReason.END),
        "json": ("", lambda o: isinstance(o, Succeeded) and isinstance(o.parsed, dict) and "year" in o.parsed),
        "trunc": (f"Go on [[fault:tokens=300#{tag}]]", truncated),
        "invalid": (f"x [[fault:invalid_request#{tag}]]", errored(ErrorKind.INVALID_REQUEST)),
        "overload": (f"x [[fault:overloaded#{tag}]]", errored(ErrorKind.OVERLOADED)),
        "servererr": (f"x [[fault:server_error#{tag}]]", errored(ErrorKind.SERVER_ERROR)),
        "ratelimit": (f"x [[fault:rate_limited#{tag}]]", errored(ErrorKind.RATE_LIMITED)),
        "overflow": ("word " * 2000, errored(ErrorKind.CONTEXT_OVERFLOW)),
        "expired": (f"x [[fault:expired#{tag}]]", lambda o: isinstance(o, Expired)),
    }
    requests = [
        ask(cid, text or "A film.", max_tokens=20, output_schema=SCHEMA if cid == "json" else None)
        for cid, (text, _) in plan.items()
    ]
    batch = h.provider.submit_batch(requests)
    assert batch.provider == h.name
    assert batch.state in (BatchState.SUBMITTED, BatchState.IN_PROGRESS)
    assert h.wait(batch.provider_batch_id) is BatchState.ENDED
    # The server's log (written when it takes the requests in: at create for Anthropic, once the input file is
    # validated for OpenAI): every request went out, once.
    received = [r["custom_id"] for r in h.srv.records() if r["batch_id"] == batch.provider_batch_id]
    assert sorted(received) == sorted(plan)
    results = h.results(batch.provider_batch_id)
    assert set(results) == set(plan)
    wrong = {cid: results[cid].outcome for cid, (_, ok) in plan.items() if not ok(results[cid].outcome)}
    assert not wrong
    overflow = results["overflow"].outcome
    assert isinstance(overflow, Errored)
    assert overflow.raw_type == OVERFLOW_RAW[h.name]

    ended = h.provider.get_batch(batch.provider_batch_id)
    assert ended.ended_at is not None
    assert ended.counts.model_dump() == {"processing": 0, "succeeded": 3, "errored": 5, "canceled": 0, "expired": 1}


@pytest.fixture(params=NAMES)
def held(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A server whose engine answers only once the test releases it: a batch cannot end before the test acts."""
    from runner import held_engine  # tests/runner/held_engine.py, shared with the runner's Ctrl-C tests

    held_engine.install()
    with LocalServer(tmp_path / "held.db", engine=held_engine.NAME, time_scale=0.005, api_key=KEY) as srv:
        try:
            yield Harness(request.param, srv)
        finally:
            held_engine.release.set()


def test_a_canceled_batch_ends_with_its_unprocessed_requests_canceled(held: Harness) -> None:
    from runner import held_engine

    h = held
    requests = [ask(f"c{i}", f"Question {i}") for i in range(40)]
    batch = h.provider.submit_batch(requests)
    assert held_engine.arrived.wait(60), "the batch never reached the engine"  # in progress, and held there
    with pytest.raises(ProviderError, match="has not ended yet") as early:
        h.provider.iter_results(batch.provider_batch_id)
    assert early.value.kind is ErrorKind.INVALID_REQUEST
    canceling = h.provider.cancel_batch(batch.provider_batch_id)
    # Gemini has no cancelling state: a cancelled job shows as running until it has stopped.
    assert canceling.state in (BatchState.CANCELING, BatchState.CANCELED) or (
        h.name == "gemini" and canceling.state is BatchState.IN_PROGRESS
    )
    held_engine.release.set()  # the requests already at the engine finish; the rest are canceled
    assert h.wait(batch.provider_batch_id, timeout=120) is BatchState.CANCELED
    results = h.results(batch.provider_batch_id)
    assert set(results) == {r.custom_id for r in requests}
    assert all(isinstance(r.outcome, Canceled | Succeeded) for r in results.values())
    assert any(isinstance(r.outcome, Canceled) for r in results.values())


def test_the_batch_path_refuses_tool_calling_before_sending_anything(h: Harness) -> None:
    before = len(h.srv.records())
    tool = {"name": "lookup", "description": "d", "input_schema": {"type": "object"}}
    with pytest.raises(RequestRefused, match="t2.*synchronously"):
        h.provider.submit_batch([ask("t1", "hi"), ask("t2", "weather?", tools=[tool])])
    assert len(h.srv.records()) == before


def test_sync_and_batch_send_the_same_parameters(h: Harness) -> None:
    """One request builder: what the sync call carries is what the batch entry carries, on the wire."""
    bodies: list[httpx2.Request] = []

    def capture(request: httpx2.Request) -> None:
        request.read()
        bodies.append(request)

    with httpx2.Client(event_hooks={"request": [capture]}) as client:
        spy = Harness(h.name, h.srv, http_client=client)
        req = ask(
            "same",
            "A film.",
            max_tokens=77,
            system="Answer briefly.",
            temperature=None if h.name == "anthropic" else 0.3,  # anthropic SDK 2.10 has no sampling parameters
            stop_sequences=["END"],
            output_schema=SCHEMA,
        )
        spy.provider.send(req)
        sync_body = json.loads(bodies[-1].content)
        spy.provider.submit_batch([req])
    if h.name == "anthropic":
        batch_params = json.loads(bodies[-1].content)["requests"][0]["params"]
    elif h.name == "gemini":
        batch_params = json.loads(bodies[-1].content)["batch"]["inputConfig"]["requests"]["requests"][0]["request"]
    else:
        upload = next(b for b in bodies if b.url.path.endswith("/files"))
        line = next(ln for ln in upload.content.split(b"\n") if ln.startswith(b'{"custom_id"'))
        batch_params = json.loads(line)["body"]
    assert batch_params == sync_body
    # And the parameters are really there: the builder did not drop any of them.
    flat = json.dumps(sync_body)
    for needle in ('"Answer briefly."', '"END"', "77", '"year"'):
        assert needle in flat


# --- API-level faults: 429 / 5xx on any call, dropped and malformed results downloads ---------------------------


@pytest.mark.parametrize("name", NAMES)
def test_api_level_429_and_5xx_are_retried_everywhere(name: str, faulty_server: LocalServer) -> None:
    h = Harness(name, faulty_server, attempts=25, **FILE_RESULTS.get(name, {}))
    for i in range(8):
        assert isinstance(h.provider.send(ask(f"f{i}", "hello")), Succeeded)
    requests = [ask(f"b{i}", f"Question {i}") for i in range(8)]
    batch = h.provider.submit_batch(requests)
    assert h.wait(batch.provider_batch_id) is BatchState.ENDED
    results = h.results(batch.provider_batch_id)

    # Nothing lost or doubled, despite dropped downloads; the line the server broke is reported, not skipped.
    assert set(results) == {r.custom_id for r in requests}
    broken = [r for r in results.values() if isinstance(r.outcome, Errored)]
    assert broken and all(
        r.outcome.kind is ErrorKind.UNKNOWN and r.outcome.raw_type == "malformed_result"  # type: ignore[union-attr]
        for r in broken
    )
    assert all(isinstance(r.outcome, Succeeded) for r in results.values() if r not in broken)
    # Batch creation was sent once per batch (a 429/5xx means it was not created; no duplicate got through).
    created = {r["batch_id"] for r in faulty_server.records() if r["batch_id"] and r["custom_id"] == "b0"}
    assert batch.provider_batch_id in created
    assert h.sleeps, "the planted faults should have caused at least one retry"
    assert 0.05 in h.sleeps  # a planted 429's retry-after-ms (50 ms) was honoured exactly


@pytest.mark.parametrize("name", NAMES)
def test_a_results_download_that_always_drops_is_retried_then_surfaces_as_timeout(
    name: str, dropping_server: LocalServer
) -> None:
    h = Harness(name, dropping_server, attempts=3, **FILE_RESULTS.get(name, {}))
    batch = h.provider.submit_batch([ask(f"d{i}", f"Question {i}") for i in range(6)])
    assert h.wait(batch.provider_batch_id) is BatchState.ENDED
    seen: list[str] = []
    with pytest.raises(ProviderError) as info:
        for result in h.provider.iter_results(batch.provider_batch_id):
            seen.append(result.custom_id)
    assert info.value.kind is ErrorKind.TIMEOUT
    assert len(h.sleeps) == 2  # three downloads, each cut off half-way
    assert len(seen) == len(set(seen))  # what did arrive was never repeated by the re-reads


@pytest.mark.parametrize("name", NAMES)
def test_timeouts_are_retried_except_where_a_repeat_could_bill_twice(name: str, slow_server: LocalServer) -> None:
    h = Harness(name, slow_server, attempts=2, timeout=0.15)
    with pytest.raises(ProviderError) as info:
        h.provider.send(ask("slow1", "hello"))
    assert info.value.kind is ErrorKind.TIMEOUT
    assert len(h.sleeps) == 1  # a sync call is safe to repeat: retried

    h.sleeps.clear()
    with pytest.raises(ProviderError) as info:
        h.provider.submit_batch([ask("slow2", "hello")])
    assert info.value.kind is ErrorKind.TIMEOUT
    if name in ("anthropic", "gemini"):
        # Creating a batch is not repeated after a timeout (the server may have created it): the user is told so.
        assert h.sleeps == []
        assert "list the provider's batches" in str(info.value)
    else:
        # OpenAI's first step, the input-file upload, is safe to repeat (a spare file at worst): retried, and no
        # batch is created while the upload has not gone through.
        assert len(h.sleeps) == 1
        assert not any(r["batch_id"] for r in slow_server.records() if r["dialect"] == name)
