"""Named crash points, for the crash tests: `FREIGHT_CRASH_AT=name[:n]` makes this process SIGKILL itself the n-th
time (default: the first) it passes the point `name`. Unset, a crash point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def crashpoint(name: str) -> None:
    spec = os.environ.get("FREIGHT_CRASH_AT")
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
