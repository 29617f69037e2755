"""Choosing a representative sample of a corpus, in one streaming pass.

The pass keeps three facts per document (its id, its length, its structural signature) and never its text, so a
100,000-document input costs a few megabytes; the chosen documents are read again afterwards. The choice covers the
corpus's range before it spends anything on its bulk:

1. the longest document, always: it is the one that overflows a context window or truncates a reply;
2. every signature stratum and every length quantile, greedily — each pick is the (stratum, quantile) cell that covers
   the most still-uncovered ones, the larger stratum first on a tie (the first-pass rate is a rate over the corpus);
3. what is left of the size, in proportion to the strata's shares of the corpus.

Ties and the document within a cell are drawn from `random.Random(seed)`: the same corpus and seed give the same
sample. Every pick says why it was made.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from freight.runner.inputs import Document, read_input
from freight.runner.signature import signature

DEFAULT_QUANTILES = 4


@dataclass(frozen=True, slots=True)
class Profile:
    """What the selection keeps of a document: never its text."""

    index: int  # position in the input
    doc_id: str
    chars: int
    signature: str


@dataclass
class Pick:
    index: int
    doc_id: str
    chars: int
    signature: str
    quantile: int  # 0-based length quantile
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Selection:
    documents: int  # in the whole corpus
    seed: int
    picks: list[Pick]
    strata: dict[str, int]  # signature -> documents of the corpus with it
    quantiles: list[tuple[int, int]]  # (shortest, longest) characters of each length quantile
    uncovered: list[str]  # strata / quantiles the size was too small to reach

    @property
    def indexes(self) -> set[int]:
        return {p.index for p in self.picks}


def profile(docs: Iterable[Document]) -> Iterator[Profile]:
    interned: dict[str, str] = {}  # a few distinct signatures shared by many documents: keep one copy of each
    for i, doc in enumerate(docs):
        sig = signature(doc.text, doc.source)
        yield Profile(index=i, doc_id=doc.doc_id, chars=len(doc.text), signature=interned.setdefault(sig, sig))


def select(profiles: Iterable[Profile], size: int, seed: int = 0, quantiles: int = DEFAULT_QUANTILES) -> Selection:
    if size < 1:
        raise ValueError(f"a sample needs at least one document, not {size}")
    docs = list(profiles)
    n = len(docs)
    if n == 0:
        raise ValueError("the corpus holds no documents")
    rng = random.Random(seed)

    # Quantiles by rank, not by value: 190 documents of one length still split into q non-empty quantiles.
    q = max(1, min(quantiles, n))
    by_length = sorted(docs, key=lambda p: (p.chars, p.index))
    quantile_of = {p.index: rank * q // n for rank, p in enumerate(by_length)}
    bounds: list[tuple[int, int]] = []
    for b in range(q):
        lengths = [p.chars for rank, p in enumerate(by_length) if rank * q // n == b]
        bounds.append((lengths[0], lengths[-1]))

    strata = Counter(p.signature for p in docs)
    cells: dict[tuple[str, int], list[Profile]] = defaultdict(list)
    members: dict[str, list[Profile]] = defaultdict(list)
    for p in docs:
        cells[(p.signature, quantile_of[p.index])].append(p)
        members[p.signature].append(p)

    chosen: dict[int, Pick] = {}
    need_strata = set(strata)
    need_quantiles = set(range(q))

    def describe_quantile(b: int) -> str:
        lo, hi = bounds[b]
        return f"length quantile {b + 1} of {q} ({lo:,}-{hi:,} characters)"

    def take(p: Profile, reasons: list[str]) -> None:
        b = quantile_of[p.index]
        if p.signature in need_strata:
            reasons.append(f"stratum {p.signature} ({strata[p.signature]} of {n} documents)")
            need_strata.discard(p.signature)
        if b in need_quantiles:
            reasons.append(describe_quantile(b))
            need_quantiles.discard(b)
        chosen[p.index] = Pick(p.index, p.doc_id, p.chars, p.signature, b, reasons)

    longest = max(docs, key=lambda p: (p.chars, -p.index))
    take(longest, [f"the longest document ({longest.chars:,} characters)"])

    while (need_strata or need_quantiles) and len(chosen) < min(size, n):
        best: tuple[int, int, float, tuple[str, int]] | None = None
        for key in sorted(cells):
            if all(p.index in chosen for p in cells[key]):
                continue
            gain = (key[0] in need_strata) + (key[1] in need_quantiles)
            rank = (gain, strata[key[0]], rng.random(), key)
            if gain and (best is None or rank[:3] > best[:3]):
                best = rank
        if best is None:
            break
        free = [p for p in cells[best[3]] if p.index not in chosen]
        take(rng.choice(free), [])

    # The rest of the size follows the corpus: each pick goes to the stratum furthest below its share.
    while len(chosen) < min(size, n):
        taken = Counter(p.signature for p in chosen.values())
        open_strata = [s for s in sorted(strata) if taken[s] < strata[s]]
        sig = max(open_strata, key=lambda s: (size * strata[s] / n - taken[s], strata[s]))
        free = [p for p in members[sig] if p.index not in chosen]
        share = strata[sig] / n
        take(rng.choice(free), [f"weight for stratum {sig}, {share:.0%} of the corpus"])

    uncovered = [f"stratum {s} ({strata[s]} documents)" for s in sorted(need_strata)]
    uncovered += [describe_quantile(b) for b in sorted(need_quantiles)]
    picks = sorted(chosen.values(), key=lambda p: p.index)
    return Selection(documents=n, seed=seed, picks=picks, strata=dict(strata), quantiles=bounds, uncovered=uncovered)


def choose(
    path: Path, size: int, seed: int = 0, id_field: str | None = None, text_field: str | None = None
) -> tuple[Selection, list[Document]]:
    """Select from the input at `path`, then read it again for the chosen documents' texts (in input order)."""
    selection = select(profile(read_input(path, id_field, text_field)), size, seed)
    wanted = selection.indexes
    found: list[Document] = []
    for i, doc in enumerate(read_input(path, id_field, text_field)):
        if i in wanted:
            found.append(doc)
            if len(found) == len(wanted):
                break
    return selection, found
