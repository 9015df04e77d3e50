"""The store's .npy arrays, written block by block without holding them in memory.

A file is sized up front from the readers' headers (sparse until filled); worker processes write
each tile's chips at its row offset (`RowWriter`, a small value sent with each tile), the main
process hashes the rows in order as they are finished (read back from the page cache) and, at the
end, drops the rows of tiles that turned out unreadable (`NpyBlocks`). Also the sha256 of a whole
file, for the manifest's `checksums`.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COPY_BYTES = 1 << 24  # bytes copied at a time when dropping the rows of skipped tiles


def _create_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """Write a .npy header and size the file (sparse until filled); return the header's bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    with open(path, "wb") as fh:
        fh.write(header.getvalue())
        fh.truncate(len(header.getvalue()) + int(np.prod(shape)) * dtype.itemsize)
    return header.getvalue()


@dataclass(frozen=True)
class RowWriter:
    """Where the rows of a sized .npy file lie; writes row blocks in place from any process (each
    write opens and closes the file, so a copy sent to a worker holds nothing open)."""

    path: Path
    dtype: np.dtype
    offset: int  # bytes of the header
    row_bytes: int

    def write(self, first: int, block: np.ndarray) -> None:
        """Write `block` (rows of this array's dtype and row shape) from row `first`."""
        data = memoryview(np.ascontiguousarray(block, dtype=self.dtype).data).cast("B")
        position, fd = self.offset + first * self.row_bytes, os.open(self.path, os.O_WRONLY)
        try:
            while data:
                done = os.pwrite(fd, data, position)
                data, position = data[done:], position + done
        finally:
            os.close(fd)


class NpyBlocks:
    """A .npy array sized up front whose row blocks are written in place by any process (`writer`:
    positioned writes), then hashed in row order by the main process (`written`: read back from the
    page cache), so memory stays flat at any size. `finish()` drops the rows of skipped tiles and
    returns the file's sha256."""

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        header = _create_npy(path, self.dtype, shape)
        self.offset = len(header)
        self.row_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize
        self.writer = RowWriter(path, self.dtype, self.offset, self.row_bytes)
        self.digest = hashlib.sha256(header)
        self.blocks: list[tuple[int, int]] = []  # (first row, rows) of the tiles kept, in order
        self.hashed = 0  # rows hashed so far, from row 0 without a gap
        self._fd: int | None = None  # for reading back, in the main process

    def __enter__(self) -> NpyBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def written(self, first: int, rows: int) -> None:
        """Record that rows first .. first+rows-1 hold a kept tile; hash them if no gap precedes them."""
        self.blocks.append((first, rows))
        if first == self.hashed:
            self.digest.update(os.pread(self._descriptor(), rows * self.row_bytes, self.offset + first * self.row_bytes))
            self.hashed += rows

    def finish(self) -> str:
        """Close the file, leaving only the kept rows, in order; return its sha256."""
        kept = sum(rows for _, rows in self.blocks)
        if self.hashed == kept == self.shape[0]:
            self._close()
            return self.digest.hexdigest()
        tmp = self.path.with_name(f".{self.path.name}.compact")
        offset = len(_create_npy(tmp, self.dtype, (kept, *self.shape[1:])))
        fd = self._descriptor()
        with open(tmp, "r+b") as out:
            out.seek(offset)
            for first, rows in self.blocks:
                position, left = self.offset + first * self.row_bytes, rows * self.row_bytes
                while left:
                    chunk = os.pread(fd, min(left, COPY_BYTES), position)
                    out.write(chunk)
                    position, left = position + len(chunk), left - len(chunk)
        self._close()
        os.replace(tmp, self.path)
        return sha256(self.path)


def sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
