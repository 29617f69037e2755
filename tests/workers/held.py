"""The scripted engine, holding its replies until the test lets them through: while held no batch can end, so a
test acts on a running job without racing the server's clock (as tests/runner/held_engine.py, for this folder)."""

from __future__ import annotations

import threading

from freight.domain import Errored, Request, Succeeded
from freight.server import engines
from freight.server.engines.scripted import ScriptedEngine

NAME = "held-for-workers"
arrived = threading.Event()
release = threading.Event()
HOLD_AT_MOST = 120.0  # a test that fails before releasing cannot hang the server's shutdown for good


class HeldEngine(ScriptedEngine):
    name = NAME

    def complete(self, request: Request) -> Succeeded | Errored:
        arrived.set()
        release.wait(HOLD_AT_MOST)
        return super().complete(request)


def install() -> None:
    arrived.clear()
    release.clear()
    engines.register(NAME, f"{__name__}:HeldEngine")
