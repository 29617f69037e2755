"""`freight serve --faults latency=...,stall=...,stall_finalizing=...`: a bad night you can replay, seen through the
official SDKs. Every wait is on state the server reports, never on a sleep."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median
from typing import Any

import anthropic
import openai
import pytest

from freight.server.faults import FaultSpec, FaultSpecError
from freight.server.testing import LocalServer


def a_request(custom_id: str, text: str = "hello") -> Any:
    return {
        "custom_id": custom_id,
        "params": {"model": "claude-scripted", "max_tokens": 50, "messages": [{"role": "user", "content": text}]},
    }


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = probe()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{what}: not seen within {timeout} s")


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    faults, scale = request.param
    with LocalServer(tmp_path / "s.db", time_scale=scale, faults=faults) as srv:
        yield srv


def openai_client(srv: LocalServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=2)


def upload(oai: openai.OpenAI, n: int) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    lines = [
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        for i in range(n)
    ]
    return oai.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch").id


def claude(srv: LocalServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=2)


# --- the grammar ----------------------------------------------------------------------------------------------------


def test_latency_specs_parse_with_commas_inside_and_bad_ones_say_what_is_known() -> None:
    spec = FaultSpec.parse("latency=lognormal:8,1,seed=3,stall=0.1")
    assert str(spec.latency) == "lognormal:8,1" and spec.seed == 3 and spec.stall == 0.1
    assert str(FaultSpec.parse("latency=tail:600:1.2").latency) == "tail:600,1.2"
    with pytest.raises(FaultSpecError, match=r"unknown distribution 'gamma'; known: fixed:seconds, .*lognormal:mu,sig"):
        FaultSpec.parse("latency=gamma:1,2")
    with pytest.raises(FaultSpecError, match=r"lognormal takes 2 number\(s\) \(mu, sigma\)"):
        FaultSpec.parse("latency=lognormal:8")
    with pytest.raises(FaultSpecError, match="stall=1.5 is a probability"):
        FaultSpec.parse("stall=1.5")


def test_durations_are_deterministic_by_seed_and_the_tail_is_heavy() -> None:
    def durations(spec: str) -> list[float]:
        faults = FaultSpec.parse(spec)
        # created at 0, time scale 1, no finalize time: `due` is the drawn duration itself
        return [faults.pace(f"msgbatch_{i}", 0.0, 1.0, 0.0).due or 0.0 for i in range(2000)]

    tail = durations("latency=tail:600,1.1,seed=1")
    assert tail == durations("latency=tail:600,1.1,seed=1")  # the same night, replayed
    assert tail != durations("latency=tail:600,1.1,seed=2")
    assert min(tail) >= 600
    assert sorted(tail)[int(0.99 * len(tail))] > 20 * median(tail)  # the slowest 1 % dwarf the typical batch
    lognormal = durations("latency=lognormal:8,0.5,seed=1")
    assert 0.9 * 2981 < median(lognormal) < 1.1 * 2981  # e^8
    stalled = [FaultSpec.parse("stall=0.25,seed=4").pace(f"b{i}", 0, 1, 0).stall_at for i in range(2000)]
    assert 0.2 < sum(s is not None for s in stalled) / len(stalled) < 0.3


# --- through the SDKs -----------------------------------------------------------------------------------------------

# 20 requests spread over 40 s of real time (80,000 emulated s x 0.0005): about 2 s between two of them.
SPREAD = ("latency=fixed:80000", 0.0005)


@pytest.mark.parametrize("served", [SPREAD], indirect=True)
def test_a_slow_batch_shows_partial_progress_and_a_cancel_returns_what_finished(served: LocalServer) -> None:
    oai = openai_client(served)
    batch = oai.batches.create(input_file_id=upload(oai, 20), endpoint="/v1/chat/completions", completion_window="24h")
    seen = wait_for("a first result", lambda: (b := oai.batches.retrieve(batch.id)).request_counts.completed and b)
    assert seen.status == "in_progress" and seen.request_counts.completed < 20  # the rest is still to come
    oai.batches.cancel(batch.id)
    ended = wait_for("the cancel", lambda: (b := oai.batches.retrieve(batch.id)).status == "cancelled" and b)
    assert ended.output_file_id is not None
    finished = [line for line in oai.files.content(ended.output_file_id).text.splitlines() if line]
    assert 1 <= len(finished) < 20  # what finished before the cancel is returned
    assert len(finished) == ended.request_counts.completed


# Every batch stalls; the window is 4,000 emulated s = 2 s real.
@pytest.mark.parametrize("served", [("stall=1,window=4000,seed=5", 0.0005)], indirect=True)
def test_a_stalled_batch_expires_at_the_window_end_with_its_finished_work(served: LocalServer) -> None:
    client = claude(served)
    batch = client.messages.batches.create(requests=[a_request(f"r{i}") for i in range(10)])
    ended = wait_for(
        "the window's end", lambda: (b := client.messages.batches.retrieve(batch.id)).processing_status == "ended" and b
    )
    counts = ended.request_counts
    assert counts.succeeded >= 2 and counts.expired >= 2 and counts.succeeded + counts.expired == 10
    assert ended.ended_at is not None and (ended.ended_at - ended.created_at).total_seconds() >= 2.0


@pytest.mark.parametrize("served", [("stall_finalizing=1,window=4000", 0.0005)], indirect=True)
def test_a_batch_stuck_in_finalizing_ends_only_at_the_window_end(served: LocalServer) -> None:
    oai = openai_client(served)
    batch = oai.batches.create(input_file_id=upload(oai, 3), endpoint="/v1/chat/completions", completion_window="24h")
    stuck = wait_for("finalizing", lambda: (b := oai.batches.retrieve(batch.id)).status == "finalizing" and b)
    assert stuck.request_counts is not None and stuck.request_counts.completed == 3  # the work is done, yet it waits
    done = wait_for("completed", lambda: (b := oai.batches.retrieve(batch.id)).status == "completed" and b)
    assert done.completed_at is not None and done.completed_at - done.created_at >= 2
