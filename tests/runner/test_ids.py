"""custom_ids cannot collide: no document id, however adversarial, equals another document's retry or chunk id."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from freight.domain import CUSTOM_ID_PATTERN
from freight.runner.ids import base_custom_id, retry_custom_id

# Ids built to look like freight's own follow-ups, plus arbitrary text (including what needs the digest form).
_PIECES = st.sampled_from(["x", "inv", "-r1", "--r1", "-p2", "--", "-", "_", "r", "0123456789", "a b", "/", "é"])
_ADVERSARIAL = st.lists(_PIECES, min_size=1, max_size=8).map("".join)
_LONG = st.text(alphabet="ab-_", min_size=40, max_size=90)
DOC_IDS = st.one_of(_ADVERSARIAL, _LONG, st.text(max_size=70))


@settings(max_examples=400, deadline=None)
@given(st.sets(DOC_IDS, min_size=1, max_size=12))
def test_every_id_of_every_document_is_distinct_and_valid(doc_ids: set[str]) -> None:
    seen: dict[str, str] = {}
    for doc_id in doc_ids:
        base = base_custom_id(doc_id)
        assert base_custom_id(doc_id) == base  # the same on every run
        for cid in [base, *(retry_custom_id(base, n) for n in (0, 1, 2, 9, 10, 123))]:
            assert re.fullmatch(CUSTOM_ID_PATTERN, cid), cid
            assert seen.setdefault(cid, doc_id) == doc_id, f"{cid!r} is an id of both {doc_id!r} and {seen[cid]!r}"


def test_the_ids_that_used_to_collide() -> None:
    # `inv`'s first retry was `inv-r1`, which is also the document `inv-r1`: the IntegrityError of issue 13.
    assert retry_custom_id(base_custom_id("inv"), 1) != base_custom_id("inv-r1")
    assert base_custom_id("inv-r1") == "inv-r1"  # an ordinary id is still kept as written
    assert retry_custom_id(base_custom_id("x"), 1) != base_custom_id("x--r1")
    assert "--" in base_custom_id("x--r1") and base_custom_id("x--r1") != "x--r1"
