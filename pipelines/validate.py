"""``hrm validate <table> PATH``: check a file against its table's schema.

One sub-command per table kind:

- ``raw FILE``: a raw table (CSV or Parquet; schemas/raw.py, with the task of ``--task``);
- ``examples FILE``: an intermediate table of the dataset stages: the examples tables
  (Arrow IPC) of augment and hints (schemas/examples.py), or a subsample table (Parquet);
- ``shards DIR``: a sharded dataset against its manifest and the shard schema
  (pipelines.dataset_checks.dataset_problems, also the registry's check), or every dataset of the shard
  stage's output.

A table in a stage's output folder (``raw``, ``examples``) is first checked against the sha256 its
stage recorded, as the next stage checks it (:func:`verify_recorded`).

Exit status 0 with a one-line OK summary, or 1 with a report naming the file and every
bad row or key (the first 20, the rest counted).
"""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.dataset_checks import dataset_problems
from pipelines.datasets import read_datasets_index, resolve_dataset
from pipelines.io import Count, RegisteredChoice, StageError
from pipelines.tables import BATCH_ROWS
from hrm.tasks import TASKS, task_of_columns
from pipelines.raw_validation import validate_raw_file

PROBLEMS_SHOWN = 20  # problems listed in one message; the rest are counted


@click.group("validate")
def validate() -> None:
    """Check a table file, or a sharded dataset, against its schema (one sub-command per kind).

    Rows are numbered from 0: row 0 is the first data row (the line after a CSV header).
    """


@validate.command("raw")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--task", type=RegisteredChoice(lambda: list(TASKS)), default="sudoku", show_default=True,
              help="The rules the rows follow: a task of hrm raw --task (its columns, encoding and checks).")
@click.option(
    "--check-unique/--no-check-unique",
    default=True,
    help="Also require every question to have exactly one solution (Sudoku: runs the solver on every row; "
         "maze: a unique shortest path).",
)
@click.option("--batch-rows", type=Count(1), default=BATCH_ROWS, help="Rows validated at a time.")
def validate_raw_command(path: Path, task: str, check_unique: bool, batch_rows: int) -> None:
    """Validate a raw table (CSV or Parquet): source, question, answer, rating (and the task's own columns).

    Prints a one-line summary and exits 0 when every row is valid; otherwise exits 1
    with one line per problem: row (0-based data row), column and reason.
    """
    recorded = verify_recorded(path, {})
    report = validate_raw_file(path, task=TASKS[task], check_unique=check_unique, batch_rows=batch_rows)
    if not report.ok:
        raise StageError(report.message())
    click.echo(report.summary() + recorded)


def verify_recorded(path: Path, lineage: dict) -> str:
    """Check a table of a stage's output folder (a lineage.json, a stats.json or a record beside it)
    against its recorded sha256, as the next stage would (pipelines.dataset_io.verify_table: a
    mismatch or a missing record is refused); a file outside one has no record to check. Returns the
    note for the OK line."""
    from pipelines.dataset_io import verify_table
    from pipelines.output_records import RECORD

    if not path.is_file():
        raise StageError(f"{path}: file not found")
    if not (lineage or (path.parent / "stats.json").is_file() or (path.parent / RECORD).is_file()):
        return " (not in a stage's output folder: no recorded sha256 to check)"
    verify_table(path, lineage, "validate")
    return " (sha256 as recorded)"


def validate_examples_file(path: Path, rows_per_group: int | None = None) -> str:
    """Validate an intermediate table; returns the OK summary or raises StageError with the report.

    An Arrow IPC examples table gets its task's examples schema (a table with a ``dihedral``
    column is a maze table); without ``rows_per_group`` the group size is taken from
    ``lineage.json`` beside the file when it says (as the stages do). A ``.parquet`` file is
    taken for a subsample table (raw columns and raw_index) of the task ``lineage.json`` beside
    it names (none: Sudoku).
    """
    from pipelines.dataset_io import (
        LINEAGE, SPLITS, VANILLA_TRAIN, lineage_task, read_examples_file, read_lineage, read_subsample,
    )
    from pipelines.dataset_io import rows_per_group as lineage_rows_per_group
    from schemas.examples import validate_examples

    if not path.is_file():
        raise StageError(f"{path}: file not found")
    lineage = read_lineage(path.parent, "validate", required=False)
    recorded = verify_recorded(path, lineage)
    if path.suffix.lower() == ".parquet":
        task = lineage_task(lineage)
        df = read_subsample(path, "validate", task, quiet=True)
        return f"{path}: OK, {df.height:,} rows valid ({task.name} subsample table: raw columns and raw_index){recorded}"
    df = read_examples_file(path, "validate", quiet=True)
    task = task_of_columns(df.columns)  # no lineage needed: the table's own columns say
    where = "--rows-per-group"
    if rows_per_group is None and path.stem in SPLITS + (VANILLA_TRAIN,):
        rows_per_group = lineage_rows_per_group(lineage, path.stem)
        where = f"as {path.parent / LINEAGE} says"
    report = validate_examples(df, task, rows_per_group=rows_per_group, path=str(path))
    if not report.ok:
        raise StageError(report.message())
    groups = f"group size {rows_per_group}, {where}" if rows_per_group else "group size not checked"
    return f"{report.message()} (examples table; {groups}){recorded}"


def validate_shards_dir(path: Path) -> str:
    """Validate a dataset directory, or every dataset of the shard stage's output; returns the
    OK summary or raises StageError listing every problem."""
    first = resolve_dataset(path, "vanilla")  # a dataset directory resolves to itself
    datasets = [first]
    if first != path:
        names = read_datasets_index(path)
        datasets += [resolve_dataset(path, "hint")] if names.get("hint") else []
    problems, shards, rows = [], 0, 0
    for dataset in datasets:
        manifest, found = dataset_problems(dataset)
        problems += [p.message for p in found]
        if not found:  # counts for the summary, from a manifest known to be well formed
            shards += sum(len(info["shards"]) for info in manifest["splits"].values())
            rows += sum(info["rows"] for info in manifest["splits"].values())
    if problems:
        raise StageError(f"{path}: {len(problems):,} problem{'s' if len(problems) > 1 else ''}:\n"
                         f"{problems_message(problems)}")
    names = ", ".join(d.name for d in datasets)
    return (f"{path}: OK, {len(datasets)} dataset{'s' if len(datasets) > 1 else ''} ({names}), {shards:,} shards, "
            f"{rows:,} rows valid (each shard's sha256, size, schema and rows as in the manifest; shard schema)")


def problems_message(problems: list[str], limit: int = PROBLEMS_SHOWN) -> str:
    more = len(problems) - limit
    return "\n".join(problems[:limit] + ([f"... and {more:,} more problems"] if more > 0 else []))


@validate.command("examples")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rows-per-group", type=Count(1), default=None,
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
