"""The example workflows file as a whole: what `freight plan examples/workflows.yaml` decides, and bad files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from freight.plan import Plan, PlanFileError, Verdict, default_prices, load_workflows, make_plan
from freight.plan.model import parse_workflows

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows.yaml"
NOW = datetime(2025, 1, 6, 18, 0, tzinfo=UTC)


def _plan(propose_all_batch: bool = False) -> Plan:
    return make_plan(load_workflows(EXAMPLE), prices=default_prices(), now=NOW, propose_all_batch=propose_all_batch)


def test_example_file_decisions() -> None:
    decisions = {p.workflow.name: p.decision.mode.value for p in _plan().workflows}
    assert decisions == {
        "pre-merge-check": "sync",
        "tech-debt-report": "batch",
        "nightly-test-generation": "batch",
        "weekly-security-audit": "batch",
        "iterative-code-review": "sync",
        "nightly-changelog": "sync",
    }


def test_costs_per_run_and_per_month_both_ways() -> None:
    report = next(p for p in _plan().workflows if p.workflow.name == "tech-debt-report")
    # 1,500 requests x (4,000 in x $3 + 600 out x $15) / 1M = $31.50 a night; 30 nights a month; batch halves it.
    assert report.costs.sync_per_run == pytest.approx(31.5)
    assert report.costs.batch_per_run == pytest.approx(15.75)
    assert report.costs.sync_per_month == pytest.approx(945.0)
    assert report.costs.saving_per_month == pytest.approx(472.5)


def test_managers_switch_both_to_batch_moves_the_report_and_keeps_the_pre_merge_check() -> None:
    review = _plan().proposal
    assert review is not None and review.title == "switch both to batch"
    verdicts = {m.workflow: m.verdict for m in review.moves}
    assert verdicts == {"pre-merge-check": Verdict.REFUSED, "tech-debt-report": Verdict.ACCEPTED}
    refused = next(m for m in review.moves if m.workflow == "pre-merge-check")
    assert any("blocked" in why for why in refused.why)
    assert review.accepted_saving_per_month == pytest.approx(472.5)
    assert review.claimed_saving_per_month > review.accepted_saving_per_month


def test_propose_all_batch_judges_every_workflow() -> None:
    review = _plan(propose_all_batch=True).proposal
    assert review is not None
    refused = {m.workflow for m in review.moves if m.verdict is Verdict.REFUSED}
    assert refused == {"pre-merge-check", "iterative-code-review", "nightly-changelog"}
    assert len(review.moves) == 6


def test_a_workflow_already_on_batch_is_not_a_move() -> None:
    text = (
        "workflows:\n"
        "  - {name: a, model: claude-haiku-4-5, requests_per_run: 500, current_mode: batch}\n"
        "proposal: {move_to_batch: all}\n"
    )
    review = make_plan(parse_workflows(text, "w.yaml"), prices=default_prices(), now=NOW).proposal
    assert review is not None and review.moves[0].verdict is Verdict.ALREADY_BATCH


def test_settings_in_the_file_and_overrides() -> None:
    text = (
        "settings: {min_batch_requests: 50}\nworkflows:\n  - {name: a, model: claude-haiku-4-5, requests_per_run: 90}\n"
    )
    file = parse_workflows(text, "w.yaml")
    assert make_plan(file, prices=default_prices(), now=NOW).workflows[0].decision.is_batch
    assert not make_plan(file, prices=default_prices(), now=NOW, min_batch_requests=100).workflows[0].decision.is_batch


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workflows: [\n", r"w\.yaml:2: not valid YAML"),
        ("- just a list\n", "expected a mapping with a 'workflows:' list"),
        (
            "workflows:\n  - name: ok\n    model: gpt-4o\n"
            "  - name: nightly\n    model: gpt-4o\n    requests_per_run: lots\n",
            r"w\.yaml:4: workflow 'nightly' \(#2\), field requests_per_run: Input should be a valid integer",
        ),
        ("workflows:\n  - {name: a, model: gpt-4o, sla: soon}\n", r"field sla: .*'soon' is not a duration"),
        ("workflows:\n  - {name: a, model: gpt-4o, colour: red}\n", "field colour: Extra inputs are not permitted"),
        ("workflows:\n  - {model: gpt-4o}\n", r"workflow #1, field name: Field required"),
        (
            "workflows:\n  - {name: a, model: gpt-4o}\n  - {name: a, model: gpt-4o}\n",
            "two workflows are named 'a'",
        ),
        (
            "workflows:\n  - {name: a, model: gpt-4o}\nproposal: {move_to_batch: [b]}\n",
            "proposal.move_to_batch names no such workflow: 'b'",
        ),
    ],
)
def test_malformed_files_are_clear_errors(text: str, expected: str) -> None:
    with pytest.raises(PlanFileError, match=expected):
        parse_workflows(text, "w.yaml")


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PlanFileError, match=r"missing\.yaml: cannot read"):
        load_workflows(tmp_path / "missing.yaml")
