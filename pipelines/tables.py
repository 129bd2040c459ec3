"""Reading and writing the stages' tables (Parquet, CSV): a Parquet file's sizes are bounded before it
is read, a large table is read batch by batch, and the same rows are written as the same bytes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import polars as pl

from hrm.integrity import file_sha256
from pipelines.atomic_replace import atomic_output
from pipelines.io import StageError, human_bytes

BATCH_ROWS = 500_000  # rows of a large table read (and validated) at a time: bounds the memory
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, statistics=True)  # raw and rejected tables


# The longest cell a table of ours holds is a maze string (900 characters); 4 KiB a cell leaves room
# for any text a user's table may hold, and bounds what a Parquet file may decompress to.
MAX_CELL_BYTES = 4096
PARQUET_SLACK = 1 << 20  # per column chunk: headers, dictionaries, statistics


def check_parquet_sizes(path: Path, max_cell_bytes: int = MAX_CELL_BYTES) -> None:
    """Refuse a Parquet file that would decompress to more than its rows can hold, before it is read.

    The footer gives each column chunk's row count and uncompressed size (pages, dictionary included);
    a chunk above ``rows x max_cell_bytes + 1 MiB`` is a compression bomb (14 KB on disk, 400 MB in one
    cell): a StageError names the file, the column and both sizes. A footer that cannot be read is left
    to the reader, which reports it.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # not Parquet, truncated: the reader's own error names the file
        return
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        limit = group.num_rows * max_cell_bytes + PARQUET_SLACK
        for c in range(group.num_columns):
            column = group.column(c)
            if column.total_uncompressed_size > limit:
                raise StageError(
                    f"{path}: column {column.path_in_schema!r} (row group {g}) decompresses to "
                    f"{human_bytes(column.total_uncompressed_size)} for {group.num_rows:,} row(s), more than "
                    f"{human_bytes(limit)} ({max_cell_bytes:,} bytes a cell); refusing to read it "
                    f"({human_bytes(column.total_compressed_size)} on disk: a compression bomb or a damaged file)")


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a Parquet or CSV file into polars, turning I/O and format errors into StageError.
    A Parquet file's sizes are checked first (:func:`check_parquet_sizes`)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        check_parquet_sizes(path)
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path, columns=columns)
        if suffix == ".csv":
            # Everything as text: a bad value must reach validation, not fail parsing.
            df = pl.read_csv(path, infer_schema=False)
            return df.select(columns) if columns else df
    except pl.exceptions.ColumnNotFoundError as exc:
        raise StageError(f"{path}: missing column ({exc})") from None
    except Exception as exc:  # polars/pyarrow raise many kinds for a corrupt file
        raise StageError(f"{path}: cannot read as {suffix[1:]} ({type(exc).__name__}: {exc})") from None
    raise StageError(f"{path}: unsupported file type {suffix!r} (expected .parquet or .csv)")


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Slices of a Parquet file, read one at a time (row groups outside a slice are skipped)."""
    lf = pl.scan_parquet(path)
    schema = lf.collect_schema()
    n = lf.select(pl.len()).collect().item()
    if n == 0:
        yield pl.DataFrame(schema=schema)
    for offset in range(0, n, batch_rows):
        yield pl.scan_parquet(path).slice(offset, batch_rows).collect()


def iter_table_batches(path: str | os.PathLike, batch_rows: int = BATCH_ROWS) -> Iterator[pl.DataFrame]:
    """Read a CSV (all columns as text) or Parquet file in batches of ``batch_rows`` rows.

    Memory stays bounded by one batch: a Parquet file is read slice by slice; a CSV file
    is first streamed into a temporary Parquet file (polars' streaming sink), then
    sliced; a Parquet file's sizes are checked first (:func:`check_parquet_sizes`). Yields at
    least one (possibly empty) frame, so the column layout can always
    be checked. A missing, truncated or malformed file raises StageError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise StageError(f"{path}: unsupported file type {suffix!r} (expected .parquet or .csv)")
    try:
        if suffix == ".parquet":
            check_parquet_sizes(path)
            yield from _parquet_batches(path, batch_rows)
            return
        with tempfile.TemporaryDirectory(prefix="hrm-validate-") as tmp:
            staged = Path(tmp) / "table.parquet"
            # Everything as text: a bad value must reach validation, not fail parsing.
            pl.scan_csv(path, infer_schema=False).sink_parquet(staged, compression="lz4")
            yield from _parquet_batches(staged, batch_rows)
    except StageError:
        raise
    except Exception as exc:  # polars raises many kinds for a corrupt or truncated file
        raise StageError(f"{path}: cannot read as {suffix[1:]} ({type(exc).__name__}: {exc})") from None


def write_parquet(df: pl.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` atomically, with settings fixed so the same rows give the same bytes."""
    with atomic_output(path) as tmp:
        df.write_parquet(tmp, **PARQUET_OPTIONS)


# The dataset a per-puzzle table's ``row`` column indexes, in the table's own Parquet metadata: a declared,
# byte-identical output carries it (run.json, which also names it, is no output). The viewer finds the
# dataset by name and uses its manifest only when the bytes have the recorded sha256 (pipelines/view.py).
DATASET_KEY = "hrm.dataset"


def dataset_metadata(dataset_dir: Path, split: str) -> dict[str, str]:
    """The Parquet metadata that records ``dataset_dir`` (its folder name, the split and its manifest's sha256)."""
    record = {"name": Path(dataset_dir).name, "split": split,
              "manifest_sha256": file_sha256(Path(dataset_dir) / "manifest.json")}
    return {DATASET_KEY: json.dumps(record, sort_keys=True)}


def table_metadata(path: Path, key: str) -> dict | None:
    """The JSON object a Parquet table's key-value metadata holds under ``key`` (None: none, or not an object);
    StageError naming the file when it is not a Parquet table."""
    try:
        raw = pl.read_parquet_metadata(path).get(key)
    except Exception as e:  # noqa: BLE001 - whatever the Parquet reader says of a bad file
        raise StageError(f"{path}: not a Parquet table ({e})") from None
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def dataset_record(path: Path) -> dict[str, str]:
    """The dataset record of the Parquet table ``path`` (:func:`dataset_metadata`); StageError naming the file
    when it has none (a table written before tables recorded it: rerun the stage)."""
    record = table_metadata(path, DATASET_KEY)
    if record is None or not all(isinstance(record.get(k), str) for k in ("name", "split", "manifest_sha256")):
        raise StageError(f"{path}: records no dataset (Parquet metadata {DATASET_KEY!r} with name, split and "
                         "manifest_sha256): a table of an older version; rerun the stage that wrote it")
    return record


# evaluate's per-pass columns (hrm.evaluate.results.EvalResult.pass_table) in its puzzles.parquet: whose they are,
# as {"checkpoints": [K names], "passes": P, "perturbation": kind, "segments": S} under this key.
PASSES_KEY = "hrm.passes"
