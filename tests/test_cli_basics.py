"""The console script as a new user first meets it."""

from __future__ import annotations

import shutil
import subprocess
import sys

from freight import __version__


def _freight(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("freight")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "freight", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_version_and_help_list_the_commands() -> None:
    version = _freight("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"freight {__version__}"
    assert __version__ != "0.0.0"  # installed, not a bare source tree
    help_ = _freight("--help")
    assert help_.returncode == 0
    for command in ("run", "resume", "status", "results", "cancel", "jobs", "plan", "serve"):
        assert command in help_.stdout


def test_an_unknown_provider_names_the_known_ones(tmp_path: object) -> None:
    out = _freight("run", ".", "--provider", "nope", "--base-url", "http://127.0.0.1:9", "--db", f"{tmp_path}/f.db")
    assert out.returncode == 1
    assert "unknown provider 'nope'; known providers: anthropic" in out.stderr
    assert "Traceback" not in out.stderr and "started" not in out.stderr  # refused before any job was made
