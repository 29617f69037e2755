"""Ctrl-C on a run that started its own embedded server: it returns at once, says what really happens to its batches
(the server stops with freight; they wait for the resume), and the job no longer reads `running`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from freight.domain import JobState
from freight.store import Store

SCHEMA = {"type": "object", "properties": {"vendor": {"type": "string"}}, "required": ["vendor"]}


def test_ctrl_c_with_the_embedded_server(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(1500):  # enough that the embedded batch is still in progress when Ctrl-C comes
        (docs / f"inv-{i}.txt").write_text(f"vendor: V{i}")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    db = tmp_path / "f.db"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FREIGHT_HOME"] = str(tmp_path / "home")
    cmd = [sys.executable, "-m", "freight", "run", str(docs), "--prompt-text", "Extract.\n{document}"]
    cmd += ["-s", str(tmp_path / "schema.json"), "--engine", "scripted", "--no-sample", "--db", str(db)]
    cmd += ["--poll-interval", "30", "-o", str(tmp_path / "out")]  # a long poll sleep: Ctrl-C must cut it short
    # Its own session, as a terminal's foreground job is: the signal goes to the group, the embedded server included.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    submitted = False
    while time.monotonic() < deadline and not submitted and proc.poll() is None:
        if db.exists():
            with Store(str(db)) as store:
                jobs = store.list_jobs()
                batches = store.batches(jobs[0].job_id) if jobs else []
                submitted = any(b["provider_batch_id"] and b["state"] == "in_progress" for b in batches)
        time.sleep(0.2)
    assert submitted, proc.communicate(timeout=30)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert took < 3, f"Ctrl-C took {took:.1f} s"  # under a second unloaded; the margin is for a busy 2-core machine
    assert "Traceback" not in err
    assert "the embedded server stops with freight, so its batches wait" in err
    assert "keep running" not in err
    job_id = err.split("freight resume ")[1].split()[0]
    with Store(str(db)) as store:
        job = store.get_job(job_id)
        assert job is not None and job.state is JobState.STOPPED
