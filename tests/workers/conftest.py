"""Workers on a shared PostgreSQL store: a private schema per test, `freight` as a real subprocess, freight serve."""

from __future__ import annotations

import json
import os
import subprocess as sp
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from freight.cli import app

PG_URL = os.environ.get("FREIGHT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        engine = sa.create_engine(
            "postgresql+psycopg://" + PG_URL.split("://", 1)[1], connect_args={"connect_timeout": 3}
        )
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"no PostgreSQL answers at {PG_URL} ({type(exc).__name__}); set FREIGHT_TEST_PG to test workers"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty store in a private schema of the test PostgreSQL database (skipped when none answers)."""
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    schema = f"w_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine("postgresql+psycopg://" + PG_URL.split("://", 1)[1])
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def env_for(api_key: str, home: Path) -> dict[str, str]:
    return {**os.environ, "ANTHROPIC_API_KEY": api_key, "OPENAI_API_KEY": api_key, "FREIGHT_HOME": str(home)}


def freight(env: dict[str, str], *args: str, timeout: float = 180) -> sp.CompletedProcess[str]:
    return sp.run([sys.executable, "-m", "freight", *args], env=env, capture_output=True, text=True, timeout=timeout)


def cli(env: dict[str, str], *args: str) -> sp.CompletedProcess[str]:
    """A command that needs no process of its own (no signals), run in this one: the same result, seconds sooner."""
    result = CliRunner().invoke(app, list(args), env=env)
    return sp.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def start_worker(env: dict[str, str], db: str, *extra: str, log: Path | None = None) -> sp.Popen[str]:
    args = [sys.executable, "-m", "freight", "worker", "--db", db, "--poll-interval", "0.05", "--idle-poll", "0.1"]
    out = log.open("a") if log is not None else sp.DEVNULL
    return sp.Popen([*args, *extra], env=env, stdout=out, stderr=out, text=True)


def write_docs(path: Path, prefix: str, n: int) -> Path:
    """A JSONL of `n` documents with ids `prefix-0` ... the scripted engine answers each with valid JSON."""
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{prefix}-{i}", "text": f"vendor: {prefix} {i}\ntotal: {i}\n"}) + "\n")
    return path
