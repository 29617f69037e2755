"""Planted faults: markers inside a request's text, and the `--faults SPEC` of server-wide failure rates.

Markers (`[[fault:KIND]]`, `[[fault:KIND:always]]`, `[[fault:tokens=N]]`, an optional `#label`) fail or reshape one
request; "first attempt" is decided by the store (see `Store.claim_markers`) so it survives a restart. The SPEC sets
seeded random rates for whole classes of failure (see docs/serve.md for the grammar).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, fields

from freight.domain import Errored, ErrorKind, FreightError, StopReason, Succeeded
from freight.server.latency import Latency, LatencySpecError, Pace

MARKER_RE = re.compile(r"\[\[fault:([a-z_]+|tokens=\d+)(?::(always))?(?:#[A-Za-z0-9_.-]+)?\]\]")

ERROR_MARKERS: dict[str, ErrorKind] = {
    "overloaded": ErrorKind.OVERLOADED,
    "server_error": ErrorKind.SERVER_ERROR,
    "invalid_request": ErrorKind.INVALID_REQUEST,
    "rate_limited": ErrorKind.RATE_LIMITED,
}
_KNOWN_KINDS = {*ERROR_MARKERS, "malformed_json", "expired"}

# The kinds a random per-request error (`error_rate`) is drawn from: the transient ones a real service produces.
_RANDOM_KINDS = (ErrorKind.OVERLOADED, ErrorKind.SERVER_ERROR, ErrorKind.RATE_LIMITED)

_ERROR_MESSAGES: dict[ErrorKind, str] = {
    ErrorKind.OVERLOADED: "Overloaded (planted fault)",
    ErrorKind.SERVER_ERROR: "Internal server error (planted fault)",
    ErrorKind.INVALID_REQUEST: "Invalid request (planted fault)",
    ErrorKind.RATE_LIMITED: "Rate limit exceeded (planted fault)",
}


class FaultSpecError(FreightError):
    pass


@dataclass(frozen=True)
class FaultSpec:
    """Server-wide planted failures. Rates are probabilities in [0, 1]; durations as documented per field."""

    seed: int = 0
    error_rate: float = 0.0  # per request (batch or sync): a transient error result
    http429: float = 0.0  # per API call: 429 with retry-after
    http5xx: float = 0.0  # per API call: 500 / 503 (OpenAI) or 529 (Anthropic)
    retry_after: float = 0.05  # real seconds announced with a planted 429
    slow: float = 0.0  # per API call: respond after `slow_seconds`
    slow_seconds: float = 1.0  # real seconds
    stuck_finalizing: float = 0.0  # emulated seconds every batch stays in finalizing beyond the normal time
    stuck_canceling: float = 0.0  # emulated seconds every cancel stays in canceling beyond the normal time
    drop_results: float = 0.0  # per results download: the connection drops half-way through
    malformed_results: float = 0.0  # per batch: one line of its results is not valid JSON
    duplicate_results: float = 0.0  # per batch: one result line is sent twice
    foreign_results: float = 0.0  # per batch: an extra result line whose custom_id the batch never had
    window: float | None = None  # emulated seconds of the completion window (default 24 h)
    latency: Latency | None = None  # per batch: its duration drawn from this distribution (server/latency.py)
    stall: float = 0.0  # per batch: stops part-way, the rest expires at the window's end
    stall_finalizing: float = 0.0  # per batch: stays in finalizing until the window's end

    @classmethod
    def parse(cls, spec: str) -> FaultSpec:
        """`key=value,key=value`; empty means no faults. Unknown keys are an error that lists the known ones."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, float | int | Latency] = {}
        for part in _parts(spec):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise FaultSpecError(
                    f"--faults: {part!r} is not KEY=VALUE with a known key; known keys: {', '.join(known)}"
                )
            if key == "latency":
                try:
                    values[key] = Latency.parse(raw)
                except LatencySpecError as exc:
                    raise FaultSpecError(str(exc)) from None
                continue
            try:
                value: float | int = int(raw) if key == "seed" else float(raw)
            except ValueError:
                raise FaultSpecError(f"--faults: {key}={raw!r} needs a number") from None
            if key in _RATES and not 0.0 <= float(value) <= 1.0:
                raise FaultSpecError(f"--faults: {key}={raw} is a probability; use a value between 0 and 1")
            if key not in _RATES and key != "seed" and float(value) < 0:
                raise FaultSpecError(f"--faults: {key}={raw} is a duration; use a value of 0 or more")
            values[key] = value
        return cls(**values)  # type: ignore[arg-type]

    def draw(self, *parts: object) -> float:
        """A deterministic uniform number in [0, 1) for this seed and these parts (a batch id, a custom_id ...)."""
        return draw(self.seed, *parts)

    def pace(self, batch_id: str, created_at: float, time_scale: float, finalize: float) -> Pace:
        """How this batch's work is spread over time (real seconds): its drawn latency, and where it stalls."""
        due = None
        if self.latency is not None:
            duration = self.latency.sample(self.draw("latency", batch_id))
            due = created_at + max(0.0, duration - finalize) * time_scale
        stall_at = None
        if self.stall > 0 and self.draw("stall", batch_id) < self.stall:
            stall_at = 0.2 + 0.6 * self.draw("stall-at", batch_id)  # somewhere between a fifth and four fifths done
        return Pace(due, stall_at)

    def stalls_finalizing(self, batch_id: str) -> bool:
        return self.stall_finalizing > 0 and self.draw("stall-finalizing", batch_id) < self.stall_finalizing


def _parts(spec: str) -> list[str]:
    """The `key=value` parts of a SPEC; a part without `=` right after `latency=` continues its parameters, so
    `latency=lognormal:8,1` reads as one value."""
    parts: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" not in part and parts and parts[-1].startswith("latency="):
            parts[-1] += "," + part
        else:
            parts.append(part)
    return parts


_RATES = {
    "error_rate", "http429", "http5xx", "slow", "drop_results", "malformed_results", "duplicate_results",
    "foreign_results", "stall", "stall_finalizing",
}  # fmt: skip


def draw(seed: int, *parts: object) -> float:
    digest = hashlib.blake2b("\x1f".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def order_key(seed: int, *parts: object) -> int:
    """A deterministic pseudo-random sort key (63 bits, fits SQLite's INTEGER)."""
    return int(draw(seed, *parts) * 2**63)


@dataclass(frozen=True)
class Marker:
    text: str  # the full marker, label included: the key of "first attempt"
    kind: str  # an error kind name, "malformed_json", "expired" or "tokens"
    always: bool
    tokens: int | None = None


def find_markers(text: str) -> list[Marker]:
    markers: list[Marker] = []
    for m in MARKER_RE.finditer(text):
        body, always = m.group(1), m.group(2) is not None
        if body.startswith("tokens="):
            markers.append(Marker(m.group(0), "tokens", always, int(body.removeprefix("tokens="))))
        elif body in _KNOWN_KINDS:
            markers.append(Marker(m.group(0), body, always))
    return markers


@dataclass(frozen=True)
class Plan:
    """What the active markers (and the random error rate) do to one attempt of one request."""

    error: ErrorKind | None = None
    expire: bool = False
    malformed_json: bool = False
    tokens: int | None = None


def plan_for(active: list[Marker], random_error: ErrorKind | None = None) -> Plan:
    error = next((ERROR_MARKERS[m.kind] for m in active if m.kind in ERROR_MARKERS), random_error)
    tokens = next((m.tokens for m in active if m.kind == "tokens"), None)
    return Plan(
        error=error,
        expire=any(m.kind == "expired" for m in active),
        malformed_json=any(m.kind == "malformed_json" for m in active),
        tokens=tokens,
    )


def random_error(spec: FaultSpec, *key: object) -> ErrorKind | None:
    if spec.error_rate <= 0 or spec.draw("error", *key) >= spec.error_rate:
        return None
    return _RANDOM_KINDS[int(spec.draw("error-kind", *key) * len(_RANDOM_KINDS))]


def planted_error(kind: ErrorKind) -> Errored:
    return Errored(kind=kind, message=_ERROR_MESSAGES[kind])


def reshape(outcome: Succeeded | Errored, plan: Plan, max_tokens: int) -> Succeeded | Errored:
    """Apply the reply-shaping markers to an engine's answer, whatever the engine."""
    # Without a reshaping marker the engine's answer stands as it is, with its own (real, for `local`) usage counts.
    if not isinstance(outcome, Succeeded) or (plan.tokens is None and not plan.malformed_json):
        return outcome
    text, stop, parsed = outcome.text, outcome.stop_reason, outcome.parsed
    if plan.tokens is not None:
        filler = "lorem ipsum dolor sit amet " * (plan.tokens // 6 + 1)
        text, stop, parsed = filler[: plan.tokens * 4], outcome.stop_reason, None
        if plan.tokens > max_tokens:
            text, stop = text[: max_tokens * 4], StopReason.MAX_TOKENS
    if plan.malformed_json:
        # Cut the reply mid-value: what a model that drifted out of JSON mode returns.
        text, parsed = (text[: max(1, len(text) // 2)] if text.startswith(("{", "[")) else "{" + text), None
        if text.endswith(("}", "]")):
            text = text[:-1]
    usage = outcome.usage.model_copy(update={"output_tokens": math.ceil(len(text) / 4)})
    return outcome.model_copy(update={"text": text, "stop_reason": stop, "parsed": parsed, "usage": usage})
