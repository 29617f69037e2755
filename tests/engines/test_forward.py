"""The forward engine against a real upstream: a second `freight serve` (scripted engine) on loopback.

Most tests drive the engine directly, so the upstream's planted faults are seen by the engine and not by a front
server's own fault layer; the last ones put a front server (engine=forward) between the SDKs and the upstream.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from freight.domain import ErrorKind, FreightError, Message, Request, StopReason, Succeeded
from freight.server import engines
from freight.server.engines.forward import ForwardEngine
from freight.server.testing import LocalServer, free_port

FAST = 0.0005
KEY_ENV = "FREIGHT_TEST_UPSTREAM_KEY"
UP_KEY = "upstream-key"


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "upstream-key")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "upstream.db", time_scale=FAST, api_key="upstream-key") as srv:
        yield srv


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def engine(upstream: LocalServer, sleeps: list[float]) -> Iterator[ForwardEngine]:
    eng = ForwardEngine(upstream=upstream.openai_base_url, upstream_key_env=KEY_ENV, sleep=sleeps.append)
    yield eng
    eng.close()


def req(text: str, **kw: object) -> Request:
    return Request.model_validate({"custom_id": "r1", "model": "gpt-4o-mini", "max_tokens": 200, **kw,
                                   "messages": [Message(role="user", content=text)]})  # fmt: skip


def sync_calls(srv: LocalServer) -> int:
    return sum(1 for r in srv.records() if r["batch_id"] is None)


def test_reply_usage_and_stop_reasons_come_back(engine: ForwardEngine) -> None:
    out = engine.complete(req("hello there", system="be brief"))
    assert isinstance(out, Succeeded)
    assert out.text == "echo: hello there"
    assert out.stop_reason is StopReason.END
    # The scripted upstream counts ceil(chars / 4): the system prompt and the message reach it.
    assert out.usage.input_tokens == math.ceil(len("be brief\nhello there") / 4)
    assert out.usage.output_tokens == 5

    cut = engine.complete(req("a long reply please " * 20, max_tokens=5))
    assert isinstance(cut, Succeeded) and cut.stop_reason is StopReason.MAX_TOKENS and len(cut.text) == 20


def test_a_json_schema_is_forwarded_and_the_reply_parsed(engine: ForwardEngine) -> None:
    schema = {"type": "object", "properties": {"vendor": {"type": "string"}}, "required": ["vendor"]}
    out = engine.complete(req("vendor: Acme Corp", output_schema=schema))
    assert isinstance(out, Succeeded)
    assert out.parsed == {"vendor": "Acme Corp"}


@pytest.mark.parametrize("kind", ["rate_limited", "server_error", "overloaded"])
def test_an_upstream_429_or_5xx_is_retried(
    engine: ForwardEngine, upstream: LocalServer, sleeps: list[float], kind: str
) -> None:
    out = engine.complete(req(f"[[fault:{kind}]] hi"))
    assert isinstance(out, Succeeded), out
    assert sync_calls(upstream) == 2
    assert len(sleeps) == 1


def test_retries_run_out_with_the_upstreams_error(
    engine: ForwardEngine, upstream: LocalServer, sleeps: list[float]
) -> None:
    out = engine.complete(req("[[fault:server_error:always]] hi"))
    assert out.status == "errored" and out.kind is ErrorKind.SERVER_ERROR
    assert "after 5 attempts" in out.message
    assert sync_calls(upstream) == 5
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # exponential backoff between the five attempts


def test_retry_after_is_honoured(tmp_path: Path, sleeps: list[float]) -> None:
    with LocalServer(tmp_path / "u.db", time_scale=FAST, faults="http429=1,retry_after=3", api_key=UP_KEY) as up:
        eng = ForwardEngine(
            upstream=up.openai_base_url, upstream_key_env=KEY_ENV, max_retries=2, backoff=0.01, sleep=sleeps.append
        )
        out = eng.complete(req("hi"))
    assert out.status == "errored" and out.kind is ErrorKind.RATE_LIMITED
    assert sleeps == [3.0, 3.0]  # the upstream's retry-after, not the 0.01 s backoff


def test_an_upstream_context_error_is_a_context_overflow(engine: ForwardEngine, upstream: LocalServer) -> None:
    out = engine.complete(req("x" * 1000, model="scripted-ctx-100"))
    assert out.status == "errored" and out.kind is ErrorKind.CONTEXT_OVERFLOW
    assert out.message == "prompt is too long: 250 tokens > 100 maximum"
    assert out.raw_type == "context_length_exceeded"
    assert sync_calls(upstream) == 1  # a permanent error is not retried


def test_a_bad_request_is_not_retried(engine: ForwardEngine, upstream: LocalServer) -> None:
    out = engine.complete(req("[[fault:invalid_request:always]]"))
    assert out.status == "errored" and out.kind is ErrorKind.INVALID_REQUEST
    assert sync_calls(upstream) == 1


def test_a_wrong_upstream_key_is_an_auth_error(upstream: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    out = ForwardEngine(upstream=upstream.openai_base_url, upstream_key_env=KEY_ENV).complete(req("hi"))
    assert out.status == "errored" and out.kind is ErrorKind.AUTH
    assert "wrong-key" not in out.message


def test_an_unset_key_variable_is_refused(upstream: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(FreightError, match=f"{KEY_ENV}: that environment variable is not set"):
        ForwardEngine(upstream=upstream.openai_base_url, upstream_key_env=KEY_ENV)


def test_an_unreachable_upstream_is_a_retryable_error_naming_it(sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = ForwardEngine(upstream=url, max_retries=1, sleep=sleeps.append).complete(req("hi"))
    assert out.status == "errored" and out.kind.retryable
    assert url + "/chat/completions" in out.message and len(sleeps) == 1


def test_concurrency_bounds_requests_in_flight_upstream(tmp_path: Path) -> None:
    # Every upstream call takes 0.3 s: six requests through two slots need three rounds.
    with LocalServer(tmp_path / "u.db", time_scale=FAST, faults="slow=1,slow_seconds=0.3", api_key=UP_KEY) as up:
        eng = ForwardEngine(upstream=up.openai_base_url, upstream_key_env=KEY_ENV, concurrency=2)
        outs: list[object] = []
        threads = [threading.Thread(target=lambda: outs.append(eng.complete(req("hi")))) for _ in range(6)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
    assert all(isinstance(o, Succeeded) for o in outs)
    assert elapsed >= 0.9


def test_options_belong_to_their_engine() -> None:
    from freight.server.engines.options import engine_options

    with pytest.raises(FreightError, match="--upstream applies only to --engine forward"):
        engine_options("local", upstream="http://x/v1")
    with pytest.raises(FreightError, match="needs --upstream"):
        engine_options("forward")
    with pytest.raises(FreightError, match="give an http"):
        engines.create("forward", upstream="localhost:8080")


# --- a front server with engine=forward, driven by the official SDKs -------------------------------------------


@pytest.fixture
def front(tmp_path: Path, upstream: LocalServer) -> Iterator[LocalServer]:
    options = {"upstream": upstream.openai_base_url, "upstream_key_env": KEY_ENV, "concurrency": 2}
    with LocalServer(tmp_path / "front.db", engine="forward", time_scale=FAST, engine_options=options) as srv:
        yield srv


def test_openai_sdk_through_a_forwarding_server(front: LocalServer, upstream: LocalServer) -> None:
    client = openai.OpenAI(base_url=front.openai_base_url, api_key=front.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model="any-model", messages=[{"role": "user", "content": "ping"}], max_tokens=50
    )
    assert reply.choices[0].message.content == "echo: ping"
    assert reply.usage is not None and reply.usage.prompt_tokens == 1
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="scripted-ctx-10", messages=[{"role": "user", "content": "y" * 400}], max_tokens=5
        )
    assert err.value.code == "context_length_exceeded"
    assert "maximum context length is 10 tokens" in err.value.message
    assert sync_calls(upstream) == 2


def test_anthropic_batch_through_a_forwarding_server(front: LocalServer, upstream: LocalServer) -> None:
    client = anthropic.Anthropic(base_url=front.base_url, api_key=front.api_key, max_retries=0)
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": f"doc-{i}",
                "params": {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": f"doc {i}"}]},
            }
            for i in range(4)
        ]  # fmt: skip
    )
    deadline = time.monotonic() + 30
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline, "the batch did not end in 30 s"
        time.sleep(0.05)
    texts = {r.custom_id: r.result.message.content[0].text for r in client.messages.batches.results(batch.id)}  # type: ignore[union-attr]
    assert texts == {f"doc-{i}": f"echo: doc {i}" for i in range(4)}
    assert sync_calls(upstream) == 4
