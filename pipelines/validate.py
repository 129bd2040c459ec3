"""``hrm validate <table> PATH``: check a file against its table's schema.

One sub-command per table kind (``raw`` now; examples and shards can add theirs).
Exit status 0 with a one-line OK summary, or 1 with a report naming every bad row.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import click
import polars as pl

from pipelines.io import StageError
from schemas.raw import RawReport, validate_raw

DEFAULT_BATCH_ROWS = 500_000


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Slices of a Parquet file, read one at a time (row groups outside a slice are skipped)."""
    lf = pl.scan_parquet(path)
    schema = lf.collect_schema()
    n = lf.select(pl.len()).collect().item()
    if n == 0:
        yield pl.DataFrame(schema=schema)
    for offset in range(0, n, batch_rows):
        yield pl.scan_parquet(path).slice(offset, batch_rows).collect()


def iter_table_batches(path: str | os.PathLike, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
    """Read a CSV (all columns as text) or Parquet file in batches of ``batch_rows`` rows.

    Memory stays bounded by one batch: a Parquet file is read slice by slice; a CSV file
    is first streamed into a temporary Parquet file (polars' streaming sink), then
    sliced. Yields at least one (possibly empty) frame, so the column layout can always
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
            yield from _parquet_batches(path, batch_rows)
            return
        with tempfile.TemporaryDirectory(prefix="hrm-validate-") as tmp:
            staged = Path(tmp) / "table.parquet"
            # Everything as text: a bad value must reach validation, not fail parsing.
            pl.scan_csv(path, infer_schema=False).sink_parquet(staged, compression="lz4")
            yield from _parquet_batches(staged, batch_rows)
    except Exception as exc:  # polars raises many kinds for a corrupt or truncated file
        raise StageError(f"{path}: cannot read as {suffix[1:]} ({type(exc).__name__}: {exc})") from None


def validate_raw_file(
    path: str | os.PathLike,
    *,
    check_unique: bool = True,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    display_path: str | None = None,
    keep_valid: bool = False,
    progress: bool = False,
) -> RawReport:
    """Validate a raw CSV or Parquet file batch by batch; rows are numbered across the file.

    ``keep_valid=False`` (the default) keeps only the rejected rows in memory.
    """
    name = display_path or str(path)
    parts: list[RawReport] = []
    offset = 0
    for batch in iter_table_batches(path, batch_rows):
        part = validate_raw(batch, check_unique=check_unique, path=name, row_offset=offset, keep_valid=keep_valid)
        parts.append(part)
        offset += batch.height
        if progress:
            click.echo(f"  {name}: validated {offset:,} rows", err=True)
        if part.table_errors:  # the layout is wrong: the other batches would say the same
            break
    return RawReport.merge(parts, path=name, keep_valid=keep_valid)


@click.group("validate")
def validate() -> None:
    """Check a table file against its schema (one sub-command per table kind).

    Rows are numbered from 0: row 0 is the first data row (the line after a CSV header).
    """


@validate.command("raw")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--check-unique/--no-check-unique",
    default=True,
    help="Also require every question to have exactly one solution (runs the solver on every row).",
)
@click.option("--batch-rows", type=click.IntRange(min=1), default=DEFAULT_BATCH_ROWS, help="Rows validated at a time.")
def validate_raw_command(path: Path, check_unique: bool, batch_rows: int) -> None:
    """Validate a raw table (CSV or Parquet): source, question, answer, rating.

    Prints a one-line summary and exits 0 when every row is valid; otherwise exits 1
    with one line per problem: row (0-based data row), column and reason.
    """
    report = validate_raw_file(path, check_unique=check_unique, batch_rows=batch_rows)
    if not report.ok:
        raise StageError(report.message())
    click.echo(report.summary())
