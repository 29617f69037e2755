"""custom_ids derived from document ids: valid for every provider, unique, and the same on every run of an input.

No custom_id can equal another, however the documents are named (a folder holding `inv` and `inv-r1`, or `x` and
`x--r1`). The rule that makes it so: a base id never contains `--` and never ends in `-`, so `--` marks where the
base ends.

- A document id that is valid, short, free of `--` and not ending in `-` is its own base: `inv-001`.
- Any other id takes the digest form `<readable>--<10 hex of sha256>`: exactly one `--`, then hex.
- A follow-up request (a retry, a chunk part) is `<base>--r<n>`: the `r` is not hex, so it can never look like a
  digest form, and the first `--` in it still marks the end of its base.

So plain bases have no `--`, digest bases one followed by hex only, follow-ups of plain bases one followed by `r`,
follow-ups of digest bases two: the four shapes cannot meet, and within a shape the base is recovered from the id.
"""

from __future__ import annotations

import hashlib
import re

_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_RUN = re.compile(r"-{2,}")
_BASE_MAX = 48  # leaves room for "--r<n>" within the 64-character rule
_SEP = "--"


def base_custom_id(doc_id: str) -> str:
    """The document's id when it is already a safe base; otherwise a readable form plus a digest of the original, so
    two ids that sanitize alike ("a b", "a/b") still differ, and the same id always maps to the same custom_id."""
    if _BAD.search(doc_id) is None and doc_id and len(doc_id) <= _BASE_MAX and not _unsafe(doc_id):
        return doc_id
    clean = _RUN.sub("-", _BAD.sub("_", doc_id)).strip("_-") or "doc"
    digest = hashlib.sha256(doc_id.encode()).hexdigest()[:10]
    readable = clean[: _BASE_MAX - len(_SEP) - len(digest)].rstrip("-") or "doc"
    return f"{readable}{_SEP}{digest}"


def _unsafe(doc_id: str) -> bool:
    return _SEP in doc_id or doc_id.endswith("-")


def retry_custom_id(base: str, n: int) -> str:
    """The n-th follow-up request of a document (n counts every request made for it before): `<base>--r<n>`."""
    return f"{base}{_SEP}r{n}"
