"""custom_ids derived from document ids: valid for every provider, unique, and the same on every run of an input."""

from __future__ import annotations

import hashlib
import re

_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_BASE_MAX = 48  # leaves room for "-r<n>" within the 64-character rule


def base_custom_id(doc_id: str) -> str:
    """The document's id when it is already valid and short; otherwise a readable form plus a digest of the original,
    so two ids that sanitize alike ("a b", "a/b") still differ, and the same id always maps to the same custom_id."""
    clean = _BAD.sub("_", doc_id).strip("_") or "doc"
    if clean == doc_id and len(clean) <= _BASE_MAX:
        return clean
    digest = hashlib.sha256(doc_id.encode()).hexdigest()[:10]
    return f"{clean[: _BASE_MAX - 11]}_{digest}"


def retry_custom_id(base: str, n: int) -> str:
    """The n-th follow-up request of a document (n counts every request made for it before): `<base>-r<n>`."""
    return f"{base}-r{n}"
