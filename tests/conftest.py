"""Shared fixtures: a store on every backend the project supports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("FREIGHT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        url = "postgresql+psycopg://" + PG_URL.split("://", 1)[1]
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"no PostgreSQL answers at {PG_URL} ({type(exc).__name__}); set FREIGHT_TEST_PG to test that backend"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty store location: a SQLite file, or a private schema in the test Postgres database."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("store") / "freight.db")
        return
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine("postgresql+psycopg://" + PG_URL.split("://", 1)[1])
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


# Folders whose tests run no freight command (adapters against the server, the server, the store): they write only
# where they are told, and the in-process server's batch timings they are tuned to (test_contract's cancel race)
# were seen to shift when the process's folder changes, so they keep the folder pytest gives them.
_NO_COMMANDS = ("providers", "server", "store", "engines", "plan")


@pytest.fixture(autouse=True)
def _work_in_tmp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that runs freight commands runs in its own temporary folder: a command's relative defaults (`--out` is
    freight-out/JOB under the current folder) then land there, never in the checkout. Subprocesses inherit it."""
    if Path(str(request.node.path)).parent.name in _NO_COMMANDS:
        return
    monkeypatch.chdir(request.getfixturevalue("tmp_path"))
