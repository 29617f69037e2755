from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from freight.plan import Policy, Workflow, project_retries, route, submission_cadence

NOW = datetime(2025, 1, 6, 18, 0, tzinfo=UTC)


def test_30h_sla_leaves_6h_buffer_and_a_4_to_6h_cadence() -> None:
    workflow = Workflow(name="report", model="claude-sonnet-4-5", requests_per_run=1500, sla=timedelta(hours=30))
    decision = route(workflow, now=NOW)
    cadence = submission_cadence(decision, Policy().safety_margin, NOW)
    assert cadence is not None
    assert cadence.buffer == timedelta(hours=6)
    assert (cadence.every_min, cadence.every_max) == (timedelta(hours=4), timedelta(hours=6))
    assert cadence.every() == "every 4-6 h"
    # Work ready now must go out within the buffer; it is then back within the SLA.
    assert cadence.latest_submission == datetime(2025, 1, 7, 0, 0, tzinfo=UTC)
    assert cadence.due == datetime(2025, 1, 8, 0, 0, tzinfo=UTC)


def test_latest_submission_for_a_deadline_is_the_deadline_minus_the_window() -> None:
    deadline = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)
    workflow = Workflow(name="audit", model="claude-sonnet-4-5", requests_per_run=500, deadline=deadline)
    decision = route(workflow, now=NOW)
    cadence = submission_cadence(decision, Policy().safety_margin, NOW)
    assert cadence is not None
    assert cadence.latest_submission == datetime(2025, 1, 9, 9, 0, tzinfo=UTC)
    assert cadence.due == deadline


def test_no_cadence_without_an_sla_or_for_sync() -> None:
    free = route(Workflow(name="a", model="claude-sonnet-4-5", requests_per_run=500))
    blocked = route(Workflow(name="b", model="claude-sonnet-4-5", requests_per_run=500, blocking=True, sla="30h"))
    assert submission_cadence(free, timedelta(hours=2), NOW) is None
    assert submission_cadence(blocked, timedelta(hours=2), NOW) is None


@pytest.mark.parametrize(("rate", "retries"), [(0.9, 100), (0.6, 400), (1.0, 0), (0.0, 1000)])
def test_retry_projection(rate: float, retries: int) -> None:
    projection = project_retries(1000, rate, cost_per_request=0.02)
    assert projection.retries == retries
    assert projection.retry_cost == pytest.approx(retries * 0.02)
    assert projection.total_requests == 1000 + retries


def test_retry_projection_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        project_retries(1000, 90, 0.01)
    with pytest.raises(ValueError, match="zero or more"):
        project_retries(-1, 0.9, 0.01)
