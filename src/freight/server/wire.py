"""What both dialects share: ids, timestamps, the neutral answer to one request (engine + planted faults)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from freight.domain import Errored, Expired, Request, Succeeded
from freight.server import faults
from freight.server.engines.base import Engine
from freight.server.faults import FaultSpec
from freight.server.store import Store


class WireError(Exception):
    """A request body the provider would refuse with 400 invalid_request_error; the message says why."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def new_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + secrets.token_hex(nbytes)


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def unix(ts: float | None) -> int | None:
    return None if ts is None else int(ts)


@dataclass(frozen=True)
class Answerer:
    """Answers one request the way the emulated service would: planted faults first, then the engine."""

    engine: Engine
    store: Store
    spec: FaultSpec

    def answer(
        self, request: Request, fault_key: tuple[object, ...], now: float, in_batch: bool = True
    ) -> Succeeded | Errored | Expired:
        plan, planted = self._plan(request.prompt_text(), fault_key, now, in_batch)
        if planted is not None:
            return planted
        return faults.reshape(self.engine.complete(request), plan, request.max_tokens)

    def planted(
        self, text: str, fault_key: tuple[object, ...], now: float, in_batch: bool = True
    ) -> Errored | Expired | None:
        """The planted fault (error or expiry) for a request that no chat engine answers (an embedding), if any."""
        return self._plan(text, fault_key, now, in_batch)[1]

    def _plan(
        self, text: str, fault_key: tuple[object, ...], now: float, in_batch: bool
    ) -> tuple[faults.Plan, Errored | Expired | None]:
        found = faults.find_markers(text)
        fresh = self.store.claim_markers([m.text for m in found if not m.always], now)
        active = [m for m in found if m.always or m.text in fresh]
        plan = faults.plan_for(active, faults.random_error(self.spec, *fault_key))
        if plan.expire and in_batch:
            return plan, Expired()
        if plan.error is not None:
            return plan, faults.planted_error(plan.error)
        return plan, None
