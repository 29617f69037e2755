"""An embeddings job's vectors as one matrix: `embeddings.npy` (float32, one row per succeeded document, in input
order) and `embeddings.ids.txt` (the document id of each row, one per line).

Why `.npy`: it is numpy's own format, which every tool that takes vectors reads (`numpy.load`, and from it FAISS,
scikit-learn, PyTorch, pandas) with no other dependency, in one call, and `numpy.load(path, mmap_mode="r")` maps it
without reading it, so a matrix larger than memory is used in place. Parquet would add pyarrow for a table of one
column. The ids sit beside it as plain text (the matrix holds numbers only): row i is the document on line i.

Written in pages, streamed: a page of rows at a time is appended as float32 after a header of fixed size, which is
rewritten with the final row count once every row is in (the .npy header is padded text, so a fixed size costs
nothing). The vectors are never all in memory, and nothing needs to know the number of rows beforehand.
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType

NPY = "embeddings.npy"
IDS = "embeddings.ids.txt"
PAGE = 512


_HEADER = 128  # bytes: magic, version, length and the header text padded to a multiple of 64, as numpy writes


def npy_header(rows: int, dims: int) -> bytes:
    """numpy's format 1.0 header for a C-order float32 matrix, padded with spaces to _HEADER bytes."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dims)}).encode()
    room = _HEADER - 10
    if len(text) + 1 > room:
        raise ValueError(f"a {rows} x {dims} matrix does not fit the reserved .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", room) + text + b" " * (room - len(text) - 1) + b"\n"


class VectorWriter:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows = 0
        self.dims: int | None = None
        self._page: list[list[float]] = []
        self._ids = (folder / IDS).open("w", encoding="utf-8")
        self._npy = (folder / NPY).open("wb")
        self._npy.write(b"\0" * _HEADER)  # the real header goes here at close

    def add(self, doc_id: str, vector: list[float]) -> None:
        if self.dims is None:
            self.dims = len(vector)
        if len(vector) != self.dims:
            raise ValueError(f"document {doc_id}: a vector of {len(vector)} numbers where the others have {self.dims}")
        self._ids.write(doc_id + "\n")
        self._page.append(vector)
        if len(self._page) >= PAGE:
            self._flush()

    def _flush(self) -> None:
        if self._page:
            self._npy.write(struct.pack(f"<{len(self._page) * (self.dims or 0)}f", *(x for v in self._page for x in v)))
            self.rows += len(self._page)
            self._page = []

    def close(self) -> None:
        self._flush()
        self._ids.close()
        if self.dims is None:  # nothing succeeded: no matrix rather than an empty one
            self._npy.close()
            (self.folder / NPY).unlink(missing_ok=True)
            return
        self._npy.seek(0)
        self._npy.write(npy_header(self.rows, self.dims))
        self._npy.close()

    def __enter__(self) -> VectorWriter:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
