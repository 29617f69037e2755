"""A running `freight serve` (scripted engine, fast clock) and the two official SDKs pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from freight.server.testing import LocalServer

FAST = 0.0005  # 24 h of emulated time in 43 s; a small batch ends in well under a second


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "server.db", time_scale=FAST) as srv:
        yield srv


@pytest.fixture
def claude(server: LocalServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0)


@pytest.fixture
def oai(server: LocalServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key, max_retries=0)


@pytest.fixture
def slow_claude(tmp_path: Path) -> Iterator[anthropic.Anthropic]:
    """A server whose batches queue for 0.3 s first: a call made right after create surely sees it unfinished."""
    with LocalServer(tmp_path / "slow.db", time_scale=0.01) as srv:
        yield anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=0)
