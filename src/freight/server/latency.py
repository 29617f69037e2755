"""Batch latency you can test against: how long each batch takes, drawn from a distribution, deterministic by seed.

A real batch API promises only "within the window". What a pipeline that keeps deadlines must survive is the shape of
the wait: most batches quick, a long tail of slow ones, a few that sit in finalizing or never finish their work
before the window closes. `--faults latency=DIST` draws, per batch, the emulated seconds from its creation to the end
of its work; the processor then releases the batch's requests to its workers evenly over that time, so the batch's
progress (its request counts) is what a client polling it sees of a slow batch. `stall=P` makes a fraction P of the
batches stop part-way (at a drawn share of their requests) and sit until the window's end, when what is unfinished
expires; `stall_finalizing=P` makes a fraction P finish their requests and then stay in finalizing until the window's
end. The draws are keyed by the seed and the batch's content (its first custom_id and its size), not its random id: a
restart, or the same work sent to a fresh server, replays the same night.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from freight.domain import FreightError

# name -> the parameters it takes, in order, as the documentation names them
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "fixed": ("seconds",),
    "uniform": ("low", "high"),
    "lognormal": ("mu", "sigma"),  # ln(seconds) ~ Normal(mu, sigma): median e^mu
    "tail": ("xm", "alpha"),  # Pareto: at least xm seconds, P(T > t) = (xm / t)^alpha; alpha <= 2 is heavy
}


class LatencySpecError(FreightError):
    pass


@dataclass(frozen=True)
class Latency:
    """A distribution of batch durations in emulated seconds (from creation to the end of the batch's work)."""

    kind: str
    params: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> Latency:
        """`NAME:P1,P2` (or `NAME:P1:P2`), e.g. `lognormal:8,1`, `tail:600,1.2`, `fixed:3600`."""
        name, _, rest = text.strip().partition(":")
        if name not in DISTRIBUTIONS:
            known = ", ".join(f"{k}:{','.join(v)}" for k, v in DISTRIBUTIONS.items())
            raise LatencySpecError(f"--faults latency={text!r}: unknown distribution {name!r}; known: {known}")
        want = DISTRIBUTIONS[name]
        raw = [p for p in rest.replace(":", ",").split(",") if p.strip()]
        if len(raw) != len(want):
            raise LatencySpecError(
                f"--faults latency={text!r}: {name} takes {len(want)} number(s) ({', '.join(want)}), "
                f"e.g. latency={name}:{','.join('1' for _ in want)}"
            )
        try:
            params = tuple(float(p) for p in raw)
        except ValueError:
            raise LatencySpecError(f"--faults latency={text!r}: {', '.join(want)} must be numbers") from None
        cls._check(text, name, params)
        return cls(name, params)

    @staticmethod
    def _check(text: str, name: str, params: tuple[float, ...]) -> None:
        bad = (
            (name == "fixed" and params[0] < 0)
            or (name == "uniform" and not 0 <= params[0] <= params[1])
            or (name == "lognormal" and params[1] < 0)
            or (name == "tail" and (params[0] <= 0 or params[1] <= 0))
        )
        if bad:
            raise LatencySpecError(
                f"--faults latency={text!r}: out of range ({'seconds >= 0' if name != 'tail' else 'xm > 0, alpha > 0'}"
                f"{', low <= high' if name == 'uniform' else ''}{', sigma >= 0' if name == 'lognormal' else ''})"
            )

    def sample(self, u: float) -> float:
        """The duration at quantile `u` in [0, 1): the inverse CDF, so one uniform draw gives one duration."""
        u = min(max(u, 1e-12), 1 - 1e-12)
        p = self.params
        if self.kind == "fixed":
            return p[0]
        if self.kind == "uniform":
            return p[0] + (p[1] - p[0]) * u
        if self.kind == "lognormal":
            return float(math.exp(p[0] + p[1] * NormalDist().inv_cdf(u)))
        return float(p[0] / (1 - u) ** (1 / p[1]))  # tail (Pareto)

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{p:g}' for p in self.params)}"


@dataclass(frozen=True)
class Pace:
    """How far one batch's work may have got at a moment: the processor claims no request beyond `allowed`."""

    due: float | None  # real time by which all of its work is released (None: no latency model, no pacing)
    stall_at: float | None  # share of its requests after which it stops for good (a stalled batch)

    def allowed(self, total: int, started_at: float, now: float) -> int:
        """How many of the batch's `total` requests may have been started by `now` (work began at `started_at`)."""
        share = 1.0
        if self.due is not None and now < self.due:
            share = max(0.0, (now - started_at) / (self.due - started_at)) if self.due > started_at else 1.0
        if self.stall_at is not None:
            share = min(share, self.stall_at)
        return math.floor(total * share + 1e-9)
