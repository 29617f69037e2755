"""The worked examples of the batch-processing literature, as routing decisions a user reads in `freight plan`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from freight.domain import Message, Request
from freight.plan import Mode, Policy, ReasonCode, Workflow, route, workflow_from_requests

NOW = datetime(2025, 1, 6, 18, 0, tzinfo=UTC)


def wf(**fields: object) -> Workflow:
    base: dict[str, object] = {"name": "w", "model": "claude-sonnet-4-5", "requests_per_run": 1000}
    return Workflow.model_validate({**base, **fields})


def test_blocking_pre_merge_check_is_sync_whatever_the_saving() -> None:
    decision = route(wf(name="pre-merge-check", blocking=True, requests_per_run=5000))
    assert decision.mode is Mode.SYNC
    assert decision.codes == {ReasonCode.BLOCKING}
    assert "whatever the saving" in decision.explain()


@pytest.mark.parametrize(
    ("name", "sla", "requests"),
    [("tech-debt-report", "30h", 1500), ("nightly-test-generation", "36h", 400), ("weekly-security-audit", "3d", 2500)],
)
def test_nobody_waits_goes_to_batch(name: str, sla: str, requests: int) -> None:
    decision = route(wf(name=name, sla=sla, requests_per_run=requests))
    assert decision.mode is Mode.BATCH
    assert decision.codes == {ReasonCode.NOBODY_WAITS}
    assert "50 %" in decision.explain()


def test_no_sla_and_nobody_waiting_is_batch() -> None:
    assert route(wf()).is_batch


def test_iterative_code_review_with_tool_calls_is_sync_with_both_reasons() -> None:
    decision = route(wf(name="iterative-code-review", tool_calling=True, iterative=True, sla="2d"))
    assert decision.mode is Mode.SYNC
    assert decision.codes == {ReasonCode.TOOL_CALLING, ReasonCode.ITERATIVE}
    assert "single-turn" in decision.explain()


def test_ninety_requests_a_night_is_too_small() -> None:
    decision = route(wf(requests_per_run=90, sla="30h"))
    assert decision.codes == {ReasonCode.TOO_SMALL}
    assert "90 requests" in decision.reasons[0].text


def test_volume_threshold_is_configurable() -> None:
    assert route(wf(requests_per_run=90), Policy(min_batch_requests=50)).is_batch
    assert route(wf(requests_per_run=100)).is_batch  # the default threshold is "fewer than 100"


def test_sla_inside_window_plus_margin_is_sync() -> None:
    # 25 h leaves 1 h after the 24 h window: less than the 2 h margin.
    decision = route(wf(sla="25h"))
    assert decision.codes == {ReasonCode.SLA_TOO_SHORT}
    assert "25 h SLA" in decision.reasons[0].text
    assert route(wf(sla="26h")).is_batch
    assert not route(wf(sla="26h"), Policy(safety_margin=timedelta(hours=3))).is_batch


def test_every_reason_is_listed() -> None:
    decision = route(wf(blocking=True, tool_calling=True, iterative=True, sla="1h", requests_per_run=3))
    assert [r.code for r in decision.reasons] == [
        ReasonCode.BLOCKING,
        ReasonCode.TOOL_CALLING,
        ReasonCode.SLA_TOO_SHORT,
        ReasonCode.ITERATIVE,
        ReasonCode.TOO_SMALL,
    ]


def test_gemini_window_is_48h() -> None:
    # Gemini's batch jobs may run 48 h: a 30 h SLA that suits Anthropic's 24 h window does not suit it.
    assert route(wf(sla="30h")).is_batch
    decision = route(wf(model="gemini-2.5-flash", sla="30h"))
    assert decision.codes == {ReasonCode.SLA_TOO_SHORT}
    assert decision.batch_window == timedelta(hours=48)


def _request(custom_id: str, tools: bool = False) -> Request:
    return Request(
        custom_id=custom_id,
        model="claude-haiku-4-5",
        messages=[Message(role="user", content="hi")],
        max_tokens=10,
        tools=[{"name": "read_file", "input_schema": {"type": "object"}}] if tools else [],
    )


def test_run_time_routing_of_a_job_with_a_tool_request_is_sync() -> None:
    requests = [_request(f"r{i}") for i in range(200)] + [_request("with-tools", tools=True)]
    decision = route(workflow_from_requests(requests, name="job-1"), now=NOW)
    assert decision.codes == {ReasonCode.TOOL_CALLING}


def test_run_time_routing_deadline_inside_window_is_sync_and_depends_on_the_injected_clock() -> None:
    requests = [_request(f"r{i}") for i in range(200)]
    job = workflow_from_requests(requests, name="job-2", deadline=datetime(2025, 1, 7, 12, 0, tzinfo=UTC))
    early = route(job, now=datetime(2025, 1, 5, 0, 0, tzinfo=UTC))  # 60 h before the deadline
    late = route(job, now=NOW)  # 18 h before it
    assert early.is_batch
    assert late.codes == {ReasonCode.SLA_TOO_SHORT}
    assert "18 h left before its deadline" in late.reasons[0].text
