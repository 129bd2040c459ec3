"""An examples table written a chunk of rows at a time, byte for byte the file ``write_examples`` makes of
the whole table (one Arrow IPC record batch), in memory bounded by a chunk.

A chunk's board columns (``inputs``, ``labels``: nearly all of a row's bytes) go to spill files beside the
table as they come; the other columns are kept. At the end pyarrow writes the one record batch with
untouched zero pages of the right size standing for each board column (no memory: they are never read),
and the file sink puts the spilled bytes where pyarrow hands it those buffers: pyarrow writes every buffer
of the body in order, unchanged (zero-copy), so the metadata and padding are its own. A table whose board
column would hold more than 2^31 - 1 cells (about 2.4 M rows of 900: the full ARC-AGI-1 build at num_aug
1000), which Arrow cannot write as one array, is written as record batches of as many rows as fit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipelines.io import human_bytes, log

BOARD_COLUMNS = ("inputs", "labels")
COPY_BYTES = 1 << 26  # one sendfile call's bytes
ARROW_MAX_LENGTH = 2**31 - 1  # an Arrow IPC array's longest (a board column's cells: rows x seq_len)


class _SpliceSink:
    """The file object pyarrow writes to: a buffer it passes from inside a registered stand-in (a board
    column's zero pages, or a batch's slice of them) is replaced by the same bytes of that column's spill
    file, the rest written as given."""

    def __init__(self, path: Path, spills: dict[int, tuple[int, Path]]):
        self._file = open(path, "wb")
        self._spills = spills  # stand-in's address -> (its length, the spill file)
        self.spliced: dict[Path, list[tuple[int, int]]] = {}  # spill file -> the (offset, size) copied in
        self._position = 0
        self.closed = False

    def write(self, data) -> int:
        spilled = self._spilled(data) if isinstance(data, pa.Buffer) else None
        if spilled is not None:
            self._splice(*spilled, data.size)
        else:
            self._file.write(memoryview(data))
        self._position += data.size if isinstance(data, pa.Buffer) else len(memoryview(data))
        return self._position

    def _spilled(self, data: pa.Buffer) -> tuple[Path, int] | None:
        """(the spill file, the offset) whose bytes ``data`` stands in for, or None."""
        for base, (size, spill) in self._spills.items():
            if base <= data.address and data.address + data.size <= base + size and data.size:
                return spill, data.address - base
        return None

    def _splice(self, spill: Path, offset: int, size: int) -> None:
        self.spliced.setdefault(spill, []).append((offset, size))
        self._file.flush()
        with open(spill, "rb") as source:
            sent = 0
            while sent < size:
                done = os.sendfile(self._file.fileno(), source.fileno(), offset + sent, min(COPY_BYTES, size - sent))
                if done == 0:
                    raise AssertionError(f"{spill}: {sent:,} of {size:,} bytes")
                sent += done

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _check_spliced(spliced: dict[Path, list[tuple[int, int]]], spills: dict[str, Path], size: int, shown: Path) -> None:
    """Every spilled byte went into the file, in order (a batch's buffer may run on into the next one's first
    bytes as its padding, as pyarrow's own file does): had pyarrow copied a stand-in instead of handing it
    over, its zeros would stand in the file where the boards belong, a table that reads but is wrong."""
    from pipelines.io import StageError

    for column, spill in spills.items():
        covered = 0  # the spill's bytes [0, covered) are in the file
        for offset, part in spliced.get(spill, []):
            if offset > covered:
                break
            covered = max(covered, offset + part)
        if covered != size:
            raise StageError(f"internal error, nothing was written: {shown}: column {column}'s {size:,} bytes were "
                             f"not all copied into the table (the first {covered:,} were)")


class ChunkedExamplesWriter:
    """``append`` the validated table's chunks in order, then ``close`` writes ``path`` (returns the rows)."""

    def __init__(self, path: Path, seq_len: int):
        self.path, self.seq_len, self.rows = path, seq_len, 0
        self._spills = {c: path.with_name(f".{path.name}.{c}.spill") for c in BOARD_COLUMNS}
        for spill in self._spills.values():
            spill.write_bytes(b"")
        self._kept: list[pl.DataFrame] = []
        self._schema: pa.Schema | None = None

    def append(self, df: pl.DataFrame, boards: dict[str, np.ndarray]) -> None:
        """One chunk: ``df`` its rows (every column), ``boards`` its board columns as uint8 [rows, seq_len]."""
        if self._schema is None:
            self._schema = df.head(0).to_arrow().schema
        for column, spill in self._spills.items():
            values = np.ascontiguousarray(boards[column], dtype=np.uint8)
            if values.shape != (df.height, self.seq_len):
                raise AssertionError(f"{column}: {values.shape} for {df.height:,} rows")
            with open(spill, "ab") as out:
                out.write(memoryview(values.reshape(-1)))
        self._kept.append(df.drop(BOARD_COLUMNS))
        self.rows += df.height

    def close(self, stage: str, shown: Path) -> int:
        t0 = time.perf_counter()
        kept = pl.concat(self._kept).rechunk().to_arrow().combine_chunks()
        self._kept = []
        size = self.rows * self.seq_len
        columns, spills = [], {}
        for field in self._schema:
            if field.name in self._spills:
                zeros = np.zeros(size, dtype=np.uint8)  # never written: pages that take no memory
                values = pa.Array.from_buffers(field.type.value_type, size, [None, pa.py_buffer(zeros)])
                columns.append(pa.FixedSizeListArray.from_arrays(values, type=field.type))
                spills[values.buffers()[1].address] = (size, self._spills[field.name])
            else:
                columns.append(kept.column(field.name).combine_chunks())
        table = pa.Table.from_arrays(columns, schema=self._schema)
        # One record batch, as write_examples, unless a board column is then too long for Arrow.
        batch_rows = max(min(table.num_rows, ARROW_MAX_LENGTH // self.seq_len), 1)
        splice = _SpliceSink(self.path, spills)
        with pa.PythonFile(splice, mode="w") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=batch_rows)
        _check_spliced(splice.spliced, self._spills, size, shown)
        for spill in self._spills.values():
            spill.unlink()
        log(stage, f"wrote {shown}: {self.rows:,} rows, {human_bytes(self.path.stat().st_size)}, "
                   f"{time.perf_counter() - t0:.1f} s")
        return self.rows
