"""Packing: every request lands in exactly one batch, every batch is within both limits, and the input is streamed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.domain import Message, Request
from freight.providers.openai import OpenAIProvider
from freight.providers.packing import pack, pack_for
from freight.providers.protocol import Limits, RequestRefused


def req(i: int, text_len: int = 10, model: str = "m1") -> Request:
    return Request(
        custom_id=f"r{i}", model=model, max_tokens=16, messages=[Message(role="user", content="x" * text_len)]
    )


def size(r: Request) -> int:
    """A size that depends on the request's content, as a provider's encoded size does."""
    return len(r.messages[0].text()) + len(r.custom_id)


requests_st = st.lists(
    st.tuples(st.integers(min_value=0, max_value=200), st.sampled_from(["m1", "m2", "m3"])), max_size=60
).map(lambda specs: [req(i, n, model) for i, (n, model) in enumerate(specs)])


@settings(max_examples=150, deadline=None)
@given(
    requests=requests_st,
    max_requests=st.integers(min_value=1, max_value=12),
    max_bytes=st.integers(min_value=205, max_value=900),
    one_model=st.booleans(),
    seed=st.randoms(use_true_random=False),
)
def test_no_request_lost_or_duplicated_and_every_batch_within_both_limits(
    requests: list[Request], max_requests: int, max_bytes: int, one_model: bool, seed: object
) -> None:
    batches = list(
        pack(iter(requests), max_requests=max_requests, max_bytes=max_bytes, size=size, one_model_per_batch=one_model)
    )
    packed = [r.custom_id for b in batches for r in b]
    assert sorted(packed) == sorted(r.custom_id for r in requests)
    assert len(packed) == len(set(packed))
    for b in batches:
        assert 1 <= len(b) <= max_requests
        assert sum(size(r) for r in b) <= max_bytes
        if one_model:
            assert len({r.model for r in b}) == 1

    # Order-independent: any permutation of the same input packs into the same set of requests, within the limits.
    shuffled = list(requests)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    again = list(
        pack(shuffled, max_requests=max_requests, max_bytes=max_bytes, size=size, one_model_per_batch=one_model)
    )
    assert sorted(r.custom_id for b in again for r in b) == sorted(packed)
    assert all(len(b) <= max_requests and sum(size(r) for r in b) <= max_bytes for b in again)


@settings(max_examples=50, deadline=None)
@given(requests=requests_st, max_requests=st.integers(min_value=1, max_value=8))
def test_batches_are_full_except_where_the_next_request_did_not_fit(requests: list[Request], max_requests: int) -> None:
    """Greedy: a batch is closed only because the next request would break a limit (so no needless extra batches)."""
    max_bytes = 600
    batches = list(pack(requests, max_requests=max_requests, max_bytes=max_bytes, size=size))
    flat = [r for b in batches for r in b]
    assert flat == requests  # one model stream: input order is kept
    position = 0
    for b in batches[:-1]:
        position += len(b)
        following = flat[position]
        assert len(b) == max_requests or sum(size(r) for r in b) + size(following) > max_bytes


def test_packing_streams_its_input() -> None:
    """The first batch is out before the input is read past it: a million-line input is never held in memory."""
    consumed = 0

    def endless() -> Iterator[Request]:
        nonlocal consumed
        i = 0
        while True:
            consumed += 1
            yield req(i)
            i += 1

    batches = pack(endless(), max_requests=5, max_bytes=10_000, size=size)
    first = next(batches)
    assert [r.custom_id for r in first] == ["r0", "r1", "r2", "r3", "r4"]
    assert consumed == 6  # the sixth request is what showed the first batch was full


def test_a_request_too_big_for_any_batch_is_refused_by_custom_id() -> None:
    requests = [req(0, 10), req(1, 5000), req(2, 10)]
    with pytest.raises(RequestRefused) as info:
        list(pack(requests, max_requests=10, max_bytes=1000, size=size))
    assert info.value.custom_id == "r1"
    assert "r1" in str(info.value) and "1,000" in str(info.value)


def test_a_duplicate_custom_id_is_refused_even_across_batch_boundaries() -> None:
    requests = [req(0), req(1), req(2), req(0)]
    with pytest.raises(RequestRefused) as info:
        list(pack(requests, max_requests=2, max_bytes=1000, size=size))
    assert info.value.custom_id == "r0"
    assert "twice" in str(info.value)


def test_pack_for_uses_the_providers_own_sizes_and_limits() -> None:
    provider = OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="k")
    requests = [req(i, 100, model="m1" if i % 2 else "m2") for i in range(20)]
    one = provider.request_bytes(requests[0])
    tight = provider.limits.model_copy(update={"max_bytes_per_batch": one * 3, "max_requests_per_batch": 100})
    batches = list(pack_for(provider, requests, tight))
    assert all(sum(provider.request_bytes(r) for r in b) <= one * 3 for b in batches)
    assert all(len({r.model for r in b}) == 1 for b in batches)  # OpenAI takes one model per batch
    assert sorted(r.custom_id for b in batches for r in b) == sorted(r.custom_id for r in requests)


def test_limits_bound_a_batch_by_count_even_when_bytes_allow_more() -> None:
    limits = Limits(max_requests_per_batch=3, max_bytes_per_batch=10**9, custom_id_pattern=".*", window_hours=24)
    batches = list(
        pack([req(i) for i in range(7)], max_requests=limits.max_requests_per_batch, max_bytes=10**9, size=size)
    )
    assert [len(b) for b in batches] == [3, 3, 1]
