"""Crash and concurrency: two processes on one SQLite file, and a writer killed with SIGKILL mid-transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import sqlalchemy as sa

from freight.domain import Job, Message, Request, Succeeded
from freight.store import Store
from freight.store.schema import events, outcomes

WRITER = textwrap.dedent("""
    import sys, time
    from freight.domain import Succeeded
    from freight.store import Store
    db, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(db)
    for i in range(n):
        store.record_outcome("job1", f"{prefix}{i}", Succeeded(text=prefix + str(i)))
        print(f"{prefix}{i}", flush=True)   # acknowledged only after the commit returned
""")

HOLDER = textwrap.dedent("""
    import sys, time
    import sqlalchemy as sa
    from freight.store import Store
    from freight.store.schema import events
    store = Store(sys.argv[1])
    with store.engine.begin() as conn:
        for i in range(200):
            conn.execute(events.insert().values(job_id="job1", at=sa.func.now(), kind="half-written", data={}))
        print("inside", flush=True)
        time.sleep(60)   # killed here, with the transaction open
""")


def _setup(db: str, cids: list[str]) -> None:
    with Store(db) as store:
        store.create_job(Job(job_id="job1", provider="anthropic", model="m"))
        store.add_requests(
            "job1",
            [Request(custom_id=c, model="m", max_tokens=5, messages=[Message(role="user", content="x")]) for c in cids],
        )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}


def test_two_processes_write_one_sqlite_file_at_once(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    n = 150
    _setup(db, [f"a{i}" for i in range(n)] + [f"b{i}" for i in range(n)])
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, db, p, str(n)], stdout=subprocess.PIPE, text=True, env=_env())
        for p in ("a", "b")
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert len(outs[0]) == n and len(outs[1]) == n
    with Store(db) as store, store.engine.connect() as conn:
        stored = set(conn.execute(sa.select(outcomes.c.custom_id)).scalars())
        assert stored == set(outs[0]) | set(outs[1])
        assert store.get_outcome("job1", "b149") == Succeeded(text="b149")


def test_sigkill_mid_transaction_loses_no_committed_row_and_shows_no_half_written_one(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    _setup(db, [f"a{i}" for i in range(5000)])
    # A writer committing outcomes one by one, killed at an arbitrary moment.
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, db, "a", "5000"], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert writer.stdout is not None
    acked = [writer.stdout.readline().strip() for _ in range(40)]
    writer.send_signal(signal.SIGKILL)
    acked += writer.stdout.read().split()
    writer.wait()
    # A second writer killed while its transaction is open.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, db], stdout=subprocess.PIPE, text=True, env=_env())
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "inside"
    holder.send_signal(signal.SIGKILL)
    holder.wait()

    t0 = time.monotonic()
    with Store(db) as store:
        with store.engine.connect() as conn:
            stored = list(conn.execute(sa.select(outcomes.c.custom_id)).scalars())
            half = conn.execute(sa.select(sa.func.count()).where(events.c.kind == "half-written")).scalar()
        # Every acknowledged outcome is there; at most the one in flight at the kill went further than its ack.
        assert set(acked) <= set(stored) and len(stored) - len(acked) <= 1
        assert half == 0
        # The store takes writes again at once: the killed writer's lock died with it.
        store.record_outcome("job1", "a4999", Succeeded(text="after"))
    assert time.monotonic() - t0 < 10


def test_processes_opening_a_new_store_at_once_migrate_it_once(db_url: str) -> None:
    opener = "import sys; from freight.store import Store; Store(sys.argv[1]).close(); print('ok')"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", opener, db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o[0].strip() for o in outs] == ["ok"] * 3, [o[1][-300:] for o in outs]
    with Store(db_url) as store, store.engine.connect() as conn:
        versions = list(conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version")).scalars())
    assert versions == sorted(set(versions)) and len(versions) >= 2
