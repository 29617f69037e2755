"""An engine a test can hold: the scripted engine's replies, given only once the test releases them.

While held, no batch can end, so a test can act on a running job (Ctrl-C, cancel) without racing the server's
clock. Registered by module name (`engines.register`), so an in-thread `LocalServer(engine=NAME)` uses it.
"""

from __future__ import annotations

import threading

from freight.domain import Errored, Request, Succeeded
from freight.server import engines
from freight.server.engines.scripted import ScriptedEngine

NAME = "held-scripted"
arrived = threading.Event()  # set when the first request reaches the engine: a batch is being worked on
release = threading.Event()  # the test sets it to let every reply through
# Bounded, so a test that fails before releasing cannot hang the server's shutdown for good.
HOLD_AT_MOST = 120.0


class HeldEngine(ScriptedEngine):
    name = NAME

    def complete(self, request: Request) -> Succeeded | Errored:
        arrived.set()
        release.wait(HOLD_AT_MOST)
        return super().complete(request)


def install() -> None:
    """Register the engine and start held."""
    arrived.clear()
    release.clear()
    engines.register(NAME, f"{__name__}:HeldEngine")
