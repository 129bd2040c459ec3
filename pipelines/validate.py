"""``hrm validate <table> PATH``: check a file against its table's schema.

One sub-command per table kind:

- ``raw FILE``: a raw table (CSV or Parquet; schemas/raw.py);
- ``examples FILE``: an intermediate table of the dataset stages: the examples tables
  (Arrow IPC) of augment and hints (schemas/examples.py), or a subsample table (Parquet);
- ``shards DIR``: a sharded dataset against its manifest and the shard schema
  (``pipelines.shard.dataset_problems``), or every dataset of the shard stage's output.

Exit status 0 with a one-line OK summary, or 1 with a report naming the file and every
bad row or key (the first 20, the rest counted).
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
    """Check a table file, or a sharded dataset, against its schema (one sub-command per kind).

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


def validate_examples_file(path: Path, rows_per_group: int | None = None) -> str:
    """Validate an intermediate table; returns the OK summary or raises StageError with the report.

    An Arrow IPC examples table gets the examples schema; without ``rows_per_group`` the
    group size is taken from ``lineage.json`` beside the file when it says (as the stages do).
    A ``.parquet`` file is taken for a subsample table (raw columns and raw_index).
    """
    from pipelines.augment import read_subsample
    from pipelines.hints import rows_per_group as lineage_rows_per_group
    from pipelines.subsample import SPLITS, read_examples_file, read_lineage
    from schemas.examples import validate_examples

    if not path.is_file():
        raise StageError(f"{path}: file not found")
    if path.suffix.lower() == ".parquet":
        df = read_subsample(path, "validate", quiet=True)
        return f"{path}: OK, {df.height:,} rows valid (subsample table: raw columns and raw_index)"
    df = read_examples_file(path, "validate", quiet=True)
    where = "--rows-per-group"
    if rows_per_group is None and path.stem in SPLITS:
        rows_per_group = lineage_rows_per_group(read_lineage(path.parent, "validate", required=False), path.stem)
        where = f"as {path.parent / 'lineage.json'} says"
    report = validate_examples(df, rows_per_group=rows_per_group, path=str(path))
    if not report.ok:
        raise StageError(report.message())
    groups = f"group size {rows_per_group}, {where}" if rows_per_group else "group size not checked"
    return f"{report.message()} (examples table; {groups})"


def validate_shards_dir(path: Path) -> str:
    """Validate a dataset directory, or every dataset of the shard stage's output; returns the
    OK summary or raises StageError listing every problem."""
    import json

    from pipelines.shard import dataset_problems, problems_message, resolve_dataset

    first = resolve_dataset(path, "vanilla")  # a dataset directory resolves to itself
    datasets = [first]
    if first != path:
        names = json.loads((path / "datasets.json").read_text())
        datasets += [resolve_dataset(path, "hint")] if names.get("hint") else []
    problems, shards, rows = [], 0, 0
    for dataset in datasets:
        manifest, found = dataset_problems(dataset)
        problems += found
        if not found:  # counts for the summary, from a manifest known to be well formed
            shards += sum(len(info["shards"]) for info in manifest["splits"].values())
            rows += sum(info["rows"] for info in manifest["splits"].values())
    if problems:
        raise StageError(f"{path}: {len(problems):,} problem{'s' if len(problems) > 1 else ''}:\n"
                         f"{problems_message(problems)}")
    names = ", ".join(d.name for d in datasets)
    return (f"{path}: OK, {len(datasets)} dataset{'s' if len(datasets) > 1 else ''} ({names}), {shards:,} shards, "
            f"{rows:,} rows valid (each shard's sha256, size, schema and rows as in the manifest; shard schema)")


@validate.command("examples")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rows-per-group", type=click.IntRange(min=1), default=None,
              help="Require this many rows per group [default: what lineage.json beside the file says, if any].")
def validate_examples_command(path: Path, rows_per_group: int | None) -> None:
    """Validate an intermediate table of the dataset stages.

    PATH is an examples table (Arrow IPC: train.arrow or test.arrow of the augment or hints
    stage) or a subsample table (Parquet). Prints a one-line summary and exits 0 when every
    row is valid; otherwise exits 1 naming each bad row (0-based) and the check it fails.
    """
    click.echo(validate_examples_file(path, rows_per_group))


@validate.command("shards")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
def validate_shards_command(path: Path) -> None:
    """Validate a sharded dataset against its manifest.

    PATH is a dataset directory (manifest.json) or the shard stage's output (datasets.json:
    every dataset listed). Every shard must be present with the manifest's sha256, size,
    schema and row range, and each split must pass the shard schema. Prints a one-line
    summary and exits 0, or exits 1 listing every problem (file, and row for a bad row).
    """
    click.echo(validate_shards_dir(path))
