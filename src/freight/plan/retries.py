"""What failing the first pass costs: the retry projection the plan prints and the sample step reuses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryProjection:
    documents: int
    first_pass_rate: float
    retries: int  # about N * (1 - p): one more request for each document that failed the first pass
    retry_cost: float  # US dollars for those retries
    total_requests: int

    def describe(self) -> str:
        return (
            f"{self.documents:,} documents at {self.first_pass_rate:.0%} first-pass -> about {self.retries:,} "
            f"retries (${self.retry_cost:,.2f})"
        )


def project_retries(n: int, first_pass_rate: float, cost_per_request: float) -> RetryProjection:
    """About N * (1 - p) retries for N documents at first-pass rate p, and what they cost.

    First order only: it assumes one retry fixes a failure, which is what the sample gate is there to make true.
    """
    if n < 0:
        raise ValueError(f"the number of documents must be zero or more, not {n}")
    if not 0.0 <= first_pass_rate <= 1.0:
        raise ValueError(f"the first-pass rate is a share between 0 and 1, not {first_pass_rate}")
    if cost_per_request < 0:
        raise ValueError(f"a request cannot cost less than nothing ({cost_per_request})")
    # round(), not int(): 1,000 x (1 - 0.9) is 99.999... in floating point, and the answer is 100.
    retries = round(n * (1.0 - first_pass_rate))
    return RetryProjection(
        documents=n,
        first_pass_rate=first_pass_rate,
        retries=retries,
        retry_cost=retries * cost_per_request,
        total_requests=n + retries,
    )
