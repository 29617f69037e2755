"""`freight prices`: the table a run charges with, each price with the date it was checked, overrides marked."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from freight.cli import app

OVERRIDE = """\
as_of: "2026-12-01"
providers:
  anthropic:
    models:
      claude-haiku-4-5: {input: 0.9, output: 4.5, cache_write: 1.1, cache_read: 0.09}
      my-finetune: {input: 2, output: 8, cache_write: 2, cache_read: 2, checked: "2026-11-30"}
"""


def _prices(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["prices", *args])
    return result.exit_code, result.output


def test_the_packaged_table_shows_both_prices_and_the_date_checked() -> None:
    code, out = _prices("--json")
    assert code == 0
    data = json.loads(out)
    haiku = next(r for r in data["models"] if r["provider"] == "anthropic" and r["model"] == "claude-haiku-4-5")
    assert (haiku["input"], haiku["output"], haiku["batch_input"], haiku["batch_output"]) == (1.0, 5.0, 0.5, 2.5)
    assert haiku["checked"] == data["as_of"] == "2025-11-20"
    assert {r["source"] for r in data["models"]} == {"packaged"}
    code, text = _prices("claude-haiku-4-5-20251001")
    assert code == 0 and "claude-haiku-4-5" in text and "2025-11-20" in text and "packaged" in text


def test_an_override_file_replaces_by_name_and_is_marked(tmp_path: Path) -> None:
    override = tmp_path / "mine.yaml"
    override.write_text(OVERRIDE)
    code, out = _prices("--prices", str(override), "--provider", "anthropic", "--json")
    assert code == 0
    by_model = {r["model"]: r for r in json.loads(out)["models"]}
    assert by_model["claude-haiku-4-5"]["input"] == 0.9
    assert by_model["claude-haiku-4-5"]["source"] == f"override: {override}"
    assert by_model["claude-haiku-4-5"]["checked"] == "2026-12-01"
    assert by_model["my-finetune"]["checked"] == "2026-11-30"
    assert by_model["claude-sonnet-4-5"]["source"] == "packaged"
    assert by_model["claude-sonnet-4-5"]["checked"] == "2025-11-20"
    code, text = _prices("--prices", str(override), "claude-haiku-4-5")
    assert code == 0 and f"override: {override}" in text


def test_mistakes_are_usage_errors_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  anthropic:\n    models:\n      x: {input: -1, output: 1, cache_write: 1, cache_read: 0}\n"
    )
    code, out = _prices("--prices", str(bad))
    assert code == 2 and "bad.yaml" in out and "Traceback" not in out
    code, out = _prices("claude-haiku-9")
    assert code == 2 and "no such model" in out
    code, out = _prices("--provider", "nope")
    assert code == 2 and "anthropic" in out
