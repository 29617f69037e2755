"""Input tokens for the runner: the model's own counter, and where there is none, a calibrated estimate said so.

Every built-in adapter has a counter (`Provider.count_tokens`). A plugin provider may have none, and a service may
refuse the counting endpoint (a 404 or 400: an Azure resource without it, a self-hosted server); then the count is
an estimate - the characters of the prompt times the job's own tokens-per-character ratio, from the input tokens its
answered requests were billed (4 characters a token until there are any) - and `TokenCount.estimated` says so. After
the first refusal the counter is not asked again in this run. Any other failure (auth, rate limit) is the caller's to
handle, as for any API call.
"""

from __future__ import annotations

import math

from freight.domain import ErrorKind, Request
from freight.providers import Provider, ProviderError
from freight.providers.protocol import TokenCount
from freight.runner.chunking import CHARS_PER_TOKEN
from freight.store import Store

_NO_COUNTER = (ErrorKind.NOT_FOUND, ErrorKind.INVALID_REQUEST)


class TokenCounter:
    def __init__(self, provider: Provider, store: Store | None = None, job_id: str | None = None) -> None:
        self.provider = provider
        self.store = store
        self.job_id = job_id
        self.why_estimated: str | None = None if callable(getattr(provider, "count_tokens", None)) else "no counter"
        self._ratio: tuple[float, str] | None = None
        self._estimates = 0

    def count(self, request: Request) -> TokenCount:
        if self.why_estimated is None:
            try:
                return self.provider.count_tokens(request)
            except ProviderError as exc:
                if exc.kind not in _NO_COUNTER:
                    raise
                self.why_estimated = f"the counter was refused ({exc})"
        # Recalibrated every 200 estimates: reading the job's answers for each one would be quadratic.
        if self._ratio is None or self._estimates % 200 == 0:
            self._ratio = self.calibration()
        self._estimates += 1
        ratio, basis = self._ratio
        return TokenCount(
            input_tokens=math.ceil(len(request.prompt_text()) * ratio),
            estimated=True,
            how=f"{self.provider.name}: {self.why_estimated}; estimated at {basis}",
        )

    def calibration(self) -> tuple[float, str]:
        """(tokens per character, how it was found): the job's own billed input over its answered prompts."""
        if self.store is not None and self.job_id is not None:
            answered = [
                r["request"]
                for state in ("done", "settled")
                for r in self.store.requests_where(self.job_id, state=state)
            ]
            chars = sum(len(r.prompt_text()) for r in answered)
            tokens = float(self.store.totals(self.job_id)["input_tokens"])
            if chars and tokens:
                return tokens / chars, f"{chars / tokens:.2f} characters a token (this job's {len(answered)} answers)"
        return 1 / CHARS_PER_TOKEN, f"{CHARS_PER_TOKEN} characters a token (nothing answered yet to calibrate on)"
