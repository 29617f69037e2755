"""`freight schedule`: files arriving between ticks, the plan's cadence, a restart - each file taken exactly once.

The scheduler's clock is injected (hours pass between ticks without anyone waiting); the jobs it submits run for real
against `freight serve` through the official SDK, and the server's records say what was sent.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.plan import load_workflows, make_plan
from freight.plan.pricing import default_prices
from freight.runner.schedule import Scheduler
from freight.server.testing import LocalServer
from freight.store import Store

HOUR = 3600.0
T0 = 1_800_000_000.0  # a fixed moment: the files' arrival times are set from it


def workflows_file(root: Path, base_url: str) -> Path:
    (root / "inbox").mkdir()
    (root / "prompt.txt").write_text("Extract the vendor.\n\n{document}")
    (root / "schema.json").write_text('{"type": "object", "properties": {"vendor": {"type": "string"}}}')
    path = root / "workflows.yaml"
    path.write_text(
        "workflows:\n"
        "  - name: invoices\n"
        "    model: claude-haiku-4-5\n"
        "    requests_per_run: 500\n"
        "    runs_per_period: 4\n"
        "    period: day\n"
        "    sla: 30h\n"
        "    input: inbox\n"
        "    prompt: prompt.txt\n"
        "    schema: schema.json\n"
        f"    base_url: {base_url}\n"
        "  - name: planning-only\n"
        "    model: claude-haiku-4-5\n"
        "    requests_per_run: 10\n"
    )
    return path


def arrive(root: Path, name: str, at: float) -> None:
    f = root / "inbox" / f"{name}.txt"
    f.write_text(f"vendor: {name}\ntotal: 1")
    os.utime(f, (at, at))


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def scheduler(root: Path, store: Store, clock: Clock, srv: LocalServer) -> Scheduler:
    path = root / "workflows.yaml"
    return Scheduler(
        store, load_workflows(path), root, state_dir=root / "state", out_root=root / "out", api_key=srv.api_key,
        now=clock,
    )  # fmt: skip


def until_done(s: Scheduler, timeout: float = 60) -> list[str]:
    """Tick (the clock standing still) until no job is open: the server's batches take real, scaled time."""
    end, completed = time.monotonic() + timeout, []
    while time.monotonic() < end:
        completed += s.tick().completed
        if not s.store.schedule_open():
            return completed
        time.sleep(0.05)
    raise AssertionError("the scheduled jobs did not end")


def test_files_arriving_between_ticks_are_each_taken_once_across_a_restart(tmp_path: Path) -> None:
    with LocalServer(tmp_path / "serve.db", time_scale=0.0005) as srv:
        workflows_file(tmp_path, srv.base_url)
        clock = Clock()
        db = str(tmp_path / "freight.db")
        arrive(tmp_path, "a", T0)
        arrive(tmp_path, "b", T0 + 60)
        with Store(db) as store:
            s = scheduler(tmp_path, store, clock, srv)
            first = s.tick()
            # 30 h SLA - 24 h window = 6 h buffer, less the 2 h margin: the plan's "every 4-6 h"
            assert "invoices: 2 file(s) waiting; the cadence (every 4-6 h) submits them at" in "\n".join(first.lines)
            assert first.submitted == []
            clock.t = T0 + 4 * HOUR + 1
            arrive(tmp_path, "c", clock.t - 10)  # arrives between the ticks: goes with a and b
            second = s.tick()
            assert len(second.submitted) == 1
            arrive(tmp_path, "d", clock.t + 5)  # arrives just after the job was taken: waits for the next one
            clock.t += 30
            assert s.tick().submitted == []
        # The scheduler stops and a new one starts on the same store: nothing dropped, nothing taken twice.
        with Store(db) as store:
            s = scheduler(tmp_path, store, clock, srv)
            arrive(tmp_path, "e", clock.t + 60)
            clock.t += HOUR
            assert s.tick().submitted == []  # d has waited one hour of its four
            clock.t += 3 * HOUR
            third = s.tick()
            assert len(third.submitted) == 1
            completed = until_done(s)
            assert set(completed) >= set(third.submitted)
            files = {r["path"].rsplit("/", 1)[1]: r["job_id"] for r in store.schedule_files_of("invoices")}
        records = srv.records()
    assert files["a.txt"] == files["b.txt"] == files["c.txt"] == second.submitted[0]
    assert files["d.txt"] == files["e.txt"] == third.submitted[0]
    # The server received each document exactly once, in one of the two batches, and nothing synchronously.
    sent = Counter(r["custom_id"] for r in records)
    assert sent == Counter({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1})
    assert len({r["batch_id"] for r in records}) == 2
    # Each job's deadline is its oldest document's arrival + the SLA; its outputs are written.
    for job in (second.submitted[0], third.submitted[0]):
        assert (tmp_path / "out" / job / "results.jsonl").read_text().count("\n") in (2, 3)


def test_plan_and_schedule_read_the_same_file(tmp_path: Path) -> None:
    path = workflows_file(tmp_path, "http://127.0.0.1:9")
    plan = make_plan(load_workflows(path), prices=default_prices(), now=datetime.now(UTC))
    decisions = {p.workflow.name: p.decision.mode.value for p in plan.workflows}
    assert decisions == {"invoices": "batch", "planning-only": "sync"}
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 0 and "every 4-6 h" in result.output


def test_cli_once_records_what_arrived_and_says_when_it_goes(tmp_path: Path) -> None:
    path = workflows_file(tmp_path, "http://127.0.0.1:9")
    arrive(tmp_path, "a", time.time())
    args = ["schedule", str(path), "--once", "--db", str(tmp_path / "f.db"), "--state-dir", str(tmp_path / "st")]
    result = CliRunner().invoke(app, args, env={"ANTHROPIC_API_KEY": "k"})
    assert result.exit_code == 0, result.output
    assert "invoices: 1 new file(s)" in result.output and "submits them at" in result.output
    assert "planning-only: not scheduled (no input" in result.output
    again = CliRunner().invoke(app, args, env={"ANTHROPIC_API_KEY": "k"})
    assert "new file" not in again.output and "invoices: 1 file(s) waiting" in again.output


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("    prompt: prompt.txt\n", "no prompt file"),
        ("    sla: 30h\n", "give it an sla"),
        ("    prompt: prompt.txt\n|    prompt: nope.txt\n", "cannot read its prompt file"),
    ],
)
def test_cli_a_workflow_it_cannot_run_is_a_clear_error(tmp_path: Path, edit: str, expected: str) -> None:
    path = workflows_file(tmp_path, "http://127.0.0.1:9")
    old, _, new = edit.partition("|")
    path.write_text(path.read_text().replace(old, new))
    result = CliRunner().invoke(app, ["schedule", str(path), "--once", "--db", str(tmp_path / "f.db")])
    assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("point", ["schedule.taken", pytest.param("schedule.snapshot", marks=pytest.mark.slow)])
def test_a_scheduler_killed_while_taking_files_takes_them_once_when_run_again(tmp_path: Path, point: str) -> None:
    import subprocess
    import sys

    with LocalServer(tmp_path / "serve.db", time_scale=0.0005) as srv:
        path = workflows_file(tmp_path, srv.base_url)
        for name in ("a", "b", "c"):
            arrive(tmp_path, name, time.time() - 5 * HOUR)  # waited past the cadence: due now
        args = [sys.executable, "-m", "freight", "schedule", str(path), "--once", "--db", str(tmp_path / "f.db"),
                "--state-dir", str(tmp_path / "st"), "--out", str(tmp_path / "out")]  # fmt: skip
        env = {**os.environ, "ANTHROPIC_API_KEY": srv.api_key}
        killed = subprocess.run(
            args, env={**env, "FREIGHT_CRASH_AT": point}, capture_output=True, text=True, timeout=120
        )
        assert killed.returncode == -9, killed.stdout + killed.stderr
        outputs = []
        for _ in range(200):  # each --once moves the job one step; the batch takes real (scaled) time
            done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            outputs.append(done.stdout)
            if "completed" in done.stdout:
                break
            time.sleep(0.1)
        records = srv.records()
    with Store(str(tmp_path / "f.db")) as store:
        taken = {r["path"].rsplit("/", 1)[1]: r["job_id"] for r in store.schedule_files_of("invoices")}
        assert len(store.schedule_open()) == 0
    assert "completed" in outputs[-1], outputs
    assert len(set(taken.values())) == 1 and set(taken) == {"a.txt", "b.txt", "c.txt"}
    assert Counter(r["custom_id"] for r in records) == Counter({"a": 1, "b": 1, "c": 1})  # each sent once


def test_cli_no_key_or_an_unknown_provider_is_refused_before_any_file_is_taken(tmp_path: Path) -> None:
    path = workflows_file(tmp_path, "http://127.0.0.1:9")
    arrive(tmp_path, "a", time.time() - 5 * HOUR)
    args = ["schedule", str(path), "--once", "--db", str(tmp_path / "f.db"), "--state-dir", str(tmp_path / "st")]
    no_key = CliRunner().invoke(app, args, env={"ANTHROPIC_API_KEY": None})
    assert no_key.exit_code == 2 and "workflow invoices: no key for anthropic: set ANTHROPIC_API_KEY" in no_key.output
    path.write_text(
        path.read_text().replace("    prompt: prompt.txt\n", "    prompt: prompt.txt\n    provider: nope\n")
    )
    unknown = CliRunner().invoke(app, args, env={"ANTHROPIC_API_KEY": "k"})
    assert unknown.exit_code == 2 and "unknown provider 'nope'" in unknown.output
    with Store(str(tmp_path / "f.db")) as store:
        assert store.schedule_files_of("invoices") == []  # nothing seen, nothing taken
