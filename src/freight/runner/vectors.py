"""An embeddings job's vectors as one matrix: `embeddings.npy` (float32, one row per succeeded document, in input
order) and `embeddings.ids.txt` (the document id of each row, one per line).

Why `.npy`: it is numpy's own format, which every tool that takes vectors reads (`numpy.load`, and from it FAISS,
scikit-learn, PyTorch, pandas) with no other dependency, in one call, and `numpy.load(path, mmap_mode="r")` maps it
without reading it, so a matrix larger than memory is used in place. Parquet would add pyarrow for a table of one
column. The ids sit beside it as plain text (the matrix holds numbers only): row i is the document on line i.

Written in pages: the file is created at its final size (the number of succeeded documents is known from the store)
as a memory map, each page of rows is copied in and flushed, so the vectors are never all in memory.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

NPY = "embeddings.npy"
IDS = "embeddings.ids.txt"
PAGE = 512


class VectorWriter:
    def __init__(self, folder: Path, rows: int) -> None:
        self.folder = folder
        self.rows = rows
        self.written = 0
        self._matrix: Any = None
        self._page: list[list[float]] = []
        self._ids = (folder / IDS).open("w", encoding="utf-8")

    def add(self, doc_id: str, vector: list[float]) -> None:
        if self._matrix is None:
            self._open(len(vector))
        if len(vector) != self._matrix.shape[1]:
            raise ValueError(
                f"document {doc_id}: a vector of {len(vector)} numbers where the others have {self._matrix.shape[1]}"
            )
        self._ids.write(doc_id + "\n")
        self._page.append(vector)
        if len(self._page) >= PAGE:
            self._flush()

    def _open(self, dims: int) -> None:
        import numpy as np  # only an embeddings job needs it

        self._matrix = np.lib.format.open_memmap(
            self.folder / NPY, mode="w+", dtype=np.float32, shape=(self.rows, dims)
        )

    def _flush(self) -> None:
        if not self._page:
            return
        import numpy as np

        end = self.written + len(self._page)
        if end > self.rows:
            raise ValueError(f"more succeeded vectors than the {self.rows} counted when the file was opened")
        self._matrix[self.written : end] = np.asarray(self._page, dtype=np.float32)
        self._matrix.flush()
        self.written, self._page = end, []

    def close(self) -> None:
        self._flush()
        self._ids.close()
        if self._matrix is None:
            (self.folder / NPY).unlink(missing_ok=True)  # nothing succeeded: no matrix rather than an empty one
            return
        del self._matrix
        if self.written != self.rows:
            raise ValueError(f"{self.written} vectors written where {self.rows} documents succeeded")

    def __enter__(self) -> VectorWriter:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
