"""The README is the contract with a new user: every command is in it, and CI runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from freight.cli import app

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_command_appears_in_the_readme() -> None:
    commands = sorted(get_command(app).commands)  # type: ignore[attr-defined]
    assert {"run", "resume", "status", "results", "cancel", "jobs", "plan", "serve"} <= set(commands)
    missing = [c for c in commands if f"`freight {c}" not in README]
    assert not missing, f"commands missing from README.md: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    block = re.search(r"<!-- ci:test -->\s*```\s*\n(.+?)\n```", README, re.S)
    assert block is not None
    assert "pytest" in block.group(1)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "ci:test" in ci  # .ci/run reads the command from between the markers instead of repeating it


def test_the_quickstart_names_files_that_exist() -> None:
    block = re.search(r"<!-- ci:main -->\s*```\s*\n(.+?)\n```", README, re.S)
    assert block is not None
    for path in re.findall(r"examples/\S+", block.group(1)):
        assert (ROOT / path).exists(), path
