"""The projection arithmetic: N documents at first-pass rate p cost about N x (1 - p) retries, priced from usage."""

from __future__ import annotations

import pytest

from freight.domain import Usage
from freight.runner.sample import estimate_full_run


@pytest.mark.parametrize(("rate", "retries"), [(0.9, 100), (0.6, 400), (1.0, 0)])
def test_a_thousand_documents_at_the_sample_rate(rate: float, retries: int) -> None:
    # 10 sampled documents used 10,000 input and 2,000 output tokens: 1,000 in / 200 out a request.
    usage = Usage(input_tokens=10_000, output_tokens=2_000)
    est = estimate_full_run("claude-sonnet-4-5", usage, k=10, n=1000, rate=rate, batch=True)
    assert est["retries"]["retries"] == retries
    requests = 1000 + retries
    per_request = (1_000 * 3.00 + 200 * 15.00) / 1e6  # claude-sonnet-4-5: $3 in, $15 out per million
    assert est["cost"]["sync_usd"] == pytest.approx(per_request * requests)
    assert est["cost"]["batch_usd"] == pytest.approx(per_request * requests / 2)
    assert est["retries"]["retry_cost_usd"] == pytest.approx(per_request / 2 * retries)


def test_an_unknown_model_is_not_priced_at_zero() -> None:
    est = estimate_full_run("no-such-model", Usage(input_tokens=100), k=1, n=1000, rate=0.6, batch=True)
    assert est["retries"]["retries"] == 400
    assert est["cost"]["priced"] is False and "no-such-model" in est["cost"]["note"]
    assert "sync_usd" not in est["cost"] and "retry_cost_usd" not in est["retries"]
