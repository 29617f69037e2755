"""`freight plan` through the real command line, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from freight.cli import plan as plan_cmd

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "workflows.yaml")
NOW = "2025-01-06T18:00:00+00:00"
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def _app() -> typer.Typer:
    # The plan command on an app of its own, so this folder's tests do not depend on the other commands' modules.
    app = typer.Typer()

    @app.callback()
    def _root() -> None: ...

    plan_cmd.register(app)
    return app


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), ["plan", *args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


def test_table_shows_decisions_reasons_costs_cadence_and_the_proposal() -> None:
    code, out, err = run(EXAMPLE, "--now", NOW)
    assert code == 0, err
    assert "tech-debt-report" in out and "$945.00" in out and "$472.50" in out
    assert "someone is blocked on the result" in out
    assert "submit every 4-6 h" in out
    assert "must be submitted by 2025-01-07 00:00 UTC" in out
    assert "400 documents at 90% first-pass -> about 40 retries" in out
    assert "proposal: switch both to batch" in out
    assert "refused" in out and "accepted" in out
    assert "list prices as known on" in out


def test_json_output() -> None:
    code, out, _ = run(EXAMPLE, "--json", "--now", NOW, "--propose-all-batch")
    assert code == 0
    data = json.loads(out)
    report = next(w for w in data["workflows"] if w["name"] == "tech-debt-report")
    assert report["decision"] == "batch"
    assert report["cost"]["per_month"] == {"sync": 945.0, "batch": 472.5, "saving": 472.5}
    assert report["cadence"]["buffer_hours"] == 6.0
    assert report["cadence"]["submit_every_hours"] == {"min": 4.0, "max": 6.0}
    assert data["proposal"]["title"] == "move everything to batch"
    verdicts = {m["workflow"]: m["verdict"] for m in data["proposal"]["moves"]}
    assert verdicts["pre-merge-check"] == "refused"
    assert verdicts["weekly-security-audit"] == "accepted"


def test_options_change_the_policy() -> None:
    _, out, _ = run(EXAMPLE, "--json", "--now", NOW, "--min-batch-requests", "50", "--safety-margin", "1h")
    data = json.loads(out)
    assert data["policy"] == {"min_batch_requests": 50, "safety_margin_hours": 1.0}
    assert next(w for w in data["workflows"] if w["name"] == "nightly-changelog")["decision"] == "batch"


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("workflows:\n  - {name: a, model: claude-sonet-4-5, requests_per_run: 500}\n")
    code, out, err = run(str(path))
    assert code == 1
    assert "unknown model 'claude-sonet-4-5'" in err and "--prices" in err
    assert "Traceback" not in out + err


def test_malformed_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("workflows:\n  - name: a\n    model: gpt-4o\n    requests_per_run: many\n")
    code, out, err = run(str(path))
    assert code == 1
    assert f"{path}:2: workflow 'a' (#1), field requests_per_run" in err
    assert "Traceback" not in out + err


def test_prices_override_and_bad_margin(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "providers:\n  acme:\n    models:\n      acme-1: {input: 1, output: 1, cache_write: 1, cache_read: 1}\n"
    )
    workflows = tmp_path / "w.yaml"
    workflows.write_text("workflows:\n  - {name: a, model: acme-1, requests_per_run: 1000, avg_input_tokens: 1000}\n")
    code, out, _ = run(str(workflows), "--prices", str(prices), "--json", "--now", NOW)
    assert code == 0
    assert json.loads(out)["workflows"][0]["cost"]["per_run"] == {"sync": 1.0, "batch": 0.5, "saving": 0.5}
    code, _, err = run(str(workflows), "--safety-margin", "soon")
    assert code == 1 and "--safety-margin" in err


def test_plan_is_a_command_of_freight() -> None:
    from freight.cli import app

    result = CliRunner().invoke(app, ["plan", "--help"], env=ENV)
    assert result.exit_code == 0
    assert "--propose-all-batch" in result.stdout
