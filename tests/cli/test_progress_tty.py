"""What a run shows while it works, as a user sees it: on a terminal (a pseudo terminal, its screen captured) a live
bar; piped, plain lines with no escape codes; with --json, one JSON event a line on stderr and the report on stdout."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.server.testing import LocalServer

SCHEMA = {"type": "object", "properties": {"vendor": {"type": "string"}}, "required": ["vendor"]}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "serve.db", engine="scripted", time_scale=0.0002) as srv:
        yield srv


def _command(tmp_path: Path, server: LocalServer, *extra: str) -> tuple[list[str], dict[str, str]]:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for i in range(12):
        (docs / f"inv-{i:02d}.txt").write_text(f"vendor: V{i}\ntotal: {i}.00")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    cmd = [sys.executable, "-m", "freight", "run", str(docs), "--prompt-text", "Extract.\n{document}"]
    cmd += ["-s", str(tmp_path / "schema.json"), "-m", "scripted", "--no-sample", "--poll-interval", "0.05"]
    cmd += ["--db", str(tmp_path / "f.db"), "--base-url", server.base_url, "-o", str(tmp_path / "out"), *extra]
    env = {**os.environ, "ANTHROPIC_API_KEY": server.api_key, "FREIGHT_HOME": str(tmp_path / "home")}
    return cmd, env


def _run_in_pty(cmd: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """The command with a pseudo terminal as its stdout and stderr (100 columns); everything it drew, raw."""
    main, child = pty.openpty()
    env = {**env, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    proc = subprocess.Popen(cmd, stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal (EIO on Linux)
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(main)
    code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_shows_the_live_bar(tmp_path: Path, server: LocalServer) -> None:
    cmd, env = _command(tmp_path, server)
    code, screen = _run_in_pty(cmd, env)
    assert code == 0, screen
    assert "\x1b[" in screen  # drawn with escape codes: the live display, not plain lines
    text = ANSI.sub("", screen)
    assert "━" in text  # the bar
    assert re.search(r"job_\w+ .*12/12", text), text  # the bar's count at the end
    assert "done 12  failed 0  pending 0" in text
    assert "rate " in text and "eta " in text and "cost $" in text
    assert "12 documents, 12 succeeded, 0 failed" in text  # then the report


def test_piped_output_is_plain_lines(tmp_path: Path, server: LocalServer) -> None:
    cmd, env = _command(tmp_path, server)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stderr and "━" not in out.stderr
    lines = [x for x in out.stderr.splitlines() if "] done " in x]
    assert lines and re.match(r"\[\s*\d+s\] done 12  failed 0  pending 0  \|  batches: 1 \(1 ended\)", lines[-1])
    assert "12 documents, 12 succeeded, 0 failed" in out.stdout


def test_json_events_on_stderr_and_the_report_on_stdout(tmp_path: Path, server: LocalServer) -> None:
    cmd, env = _command(tmp_path, server, "--json")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    events = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == 12 and progress[-1]["pending"] == 0
    assert json.loads(out.stdout)["succeeded"] == 12
