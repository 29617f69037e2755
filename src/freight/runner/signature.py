"""A cheap structural signature of a document: which documents are "like" each other.

Used to stratify samples and to pick worked examples for a document that keeps failing validation: kind of file,
size band, whether it has a table, how numeric it is, and its script. Two documents with the same signature have
roughly the same shape, whatever they say.
"""

from __future__ import annotations

import math
import re

_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|\t.*\t|^(?:[^,\n]*,){3,}[^,\n]*$", re.M)
_DIGIT = re.compile(r"\d")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def signature(text: str, source: str = "") -> str:
    kind = source.rsplit(".", 1)[-1].split(":")[0].lower() if "." in source else "txt"
    lines = text.count("\n") + 1
    size = f"l{min(6, int(math.log2(lines + 1)))}"  # 1, 2-3, 4-7 ... 64+ lines
    table = "table" if len(_TABLE_ROW.findall(text)) >= 2 else "prose"
    digits = len(_DIGIT.findall(text)) / max(1, len(text))
    numeric = "num" if digits > 0.08 else "few-num" if digits > 0.01 else "words"
    head = text[:4000]
    # Counted by the C of str and re, not a Python loop over characters: every document of an input is signed.
    ascii_chars = len(head) if head.isascii() else len(head) - len(_NON_ASCII.findall(head))
    ascii_share = ascii_chars / max(1, min(len(text), 4000))
    script = "latin" if ascii_share > 0.9 else "other"
    return f"{kind}/{size}/{table}/{numeric}/{script}"
