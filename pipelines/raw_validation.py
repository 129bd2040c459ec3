"""Validation of a raw table file (CSV or Parquet) against its task's raw schema, batch by batch:
shared by the raw stage (pipelines/raw.py) and ``hrm validate raw`` (pipelines/validate.py).
"""

from __future__ import annotations

import os

import click

from hrm.tasks import Task
from pipelines.tables import BATCH_ROWS, iter_table_batches
from schemas.raw import RawReport, raw_validator


def validate_raw_file(
    path: str | os.PathLike,
    *,
    task: Task,
    check_unique: bool = True,
    batch_rows: int = BATCH_ROWS,
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
        part = raw_validator(task)(batch, check_unique=check_unique, path=name, row_offset=offset,
                                     keep_valid=keep_valid)
        parts.append(part)
        offset += batch.height
        if progress:
            click.echo(f"  {name}: validated {offset:,} rows", err=True)
        if part.table_errors:  # the layout is wrong: the other batches would say the same
            break
    return RawReport.merge(parts, path=name, keep_valid=keep_valid)
