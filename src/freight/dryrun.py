"""The library's dry run: `freight.estimate(input, **settings)` is `freight.run` with nothing sent for inference.

The forecast itself is `freight.runner.estimate`; here the decisions a run makes first (`prepare`: provider, endpoint,
model, prices) are made the same way, a stored sample of the same prompt is looked up for the observed output, and
the provider is connected exactly as the run would connect it (the embedded server included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freight.runner.estimate import estimate as _estimate
from freight.runner.estimate import observed_output
from freight.runner.job import RunOptions
from freight.runner.sample import load_samples
from freight.store import Store, opened
from freight.target import Notice, connect, prepare, quiet


def estimate(
    input: str | Path,
    *,
    db: str | None = None,
    store: Store | None = None,
    api_key: str | None = None,
    on_notice: Notice = quiet,
    count_all_up_to: int = 200,
    sample_size: int = 200,
    seed: int = 0,
    **settings: Any,
) -> dict[str, Any]:
    """The dry run of `run(input, **settings)`: every request built as the run builds it, its input tokens counted by
    the model's own counter (a stratified sample of `sample_size` above `count_all_up_to` requests, with a 95 % error
    bar), output bounded by max_tokens and by a stored sample's observed output, the cost batch vs sync, the
    documents over the window and their parts, the number of batches. Nothing is sent for inference, no job is made.
    `freight.runner.estimate.render_estimate` prints it."""
    opts = prepare(input, api_key=api_key, on_notice=on_notice, **settings)
    return estimate_for(opts, db=db, store=store, api_key=api_key, count_all_up_to=count_all_up_to,
                        sample_size=sample_size, seed=seed)  # fmt: skip


def estimate_for(
    opts: RunOptions,
    *,
    db: str | None = None,
    store: Store | None = None,
    api_key: str | None = None,
    count_all_up_to: int = 200,
    sample_size: int = 200,
    seed: int = 0,
    samples: bool = True,
) -> dict[str, Any]:
    """`estimate` for options already prepared (what `freight run --dry-run` has in hand). `samples=False`: do not
    look for a stored sample's observed output."""
    observed = None
    if samples:
        with opened(db, store) as st:
            observed = observed_output(load_samples(st, opts, last=20), opts)
    with connect(opts, api_key) as provider:
        return _estimate(
            provider, opts, observed=observed, count_all_up_to=count_all_up_to, sample_size=sample_size, seed=seed
        )
