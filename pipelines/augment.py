"""``hrm augment``: the vanilla examples table.

Train split: each subsampled puzzle, then ``--num-aug`` random symmetries of it
(hrm.build.augment: digit relabelling, transpose with p = 0.5, band/row and
stack/column orders; one transform applied to question and answer alike). Test split:
every puzzle once, as itself (identity transform), never augmented. An independent vanilla draw
(``train_vanilla``, subsample ``--vanilla-draw independent``) is augmented like train, from its
own seed stream.

Mazes (a maze lineage, ``hrm raw --task maze``): ``--num-aug`` (at most 7) of each train maze's
other dihedral transforms (hrm.build.augment_mazes); 7 gives all 8, what the official builder's
``--aug`` emits; 0, its default and the paper's maze training, none.

Reads ``INPUT/{train,test}.parquet`` (checked against the subsample output's record) and ``INPUT/lineage.json`` (the subsample stage);
writes ``OUTPUT/{train,test}.arrow`` (and ``train_vanilla.arrow``; the examples table, schemas/examples.py; Arrow IPC) and
``OUTPUT/lineage.json``. Every table is validated (every row) before anything is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import polars as pl

from hrm.tasks import Task
from pipelines.dataset_io import (
    EXAMPLES_SUFFIX, INT32_MAX, LINEAGE, VANILLA_TRAIN, check_dirs, check_examples_memory, check_table, data_settings,
    examples_record, input_records, lineage_task, read_lineage, read_subsample, require_rows, stage_rng, tables_of,
    verify_table, write_examples, write_json,
)
from pipelines.atomic_replace import atomic_output
from pipelines.io import Count, SEED, StageError, log

# What the stage writes in its output folder: it replaces that, and refuses a folder holding anything else.
# The seed stream of each train table's symmetries (the test split is not augmented).
AUGMENT_STREAMS = {"train": "augment", VANILLA_TRAIN: "augment_vanilla"}


def build_split(df: pl.DataFrame, num_aug: int, rng: np.random.Generator | None, task: Task) -> pl.DataFrame:
    """The examples table of one split from its subsample table."""
    from schemas.examples import to_frame

    ex = task.augment(df.get_column("question").to_numpy(), df.get_column("answer").to_numpy(), num_aug, rng)
    return to_frame(ex, df.get_column("source"), df.get_column("rating").cast(pl.Int64).to_numpy(),
                    df.get_column("raw_index").to_numpy(), task)


@click.command("augment")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("data/subsample"), help="Subsample stage output.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/augment"),
              help="Directory to write (replaced as a whole on success).")
@click.option("--num-aug", type=Count(0), default=100,
              help="Transformed copies per train puzzle (paper: 1000); mazes: at most 7 (7: all 8 dihedral "
                   "transforms, the official --aug; paper: 0).")
@click.option("--seed", type=SEED, default=0, help="Seed of the transforms.")
@data_settings("augment")
def augment(input_dir: Path, output: Path, num_aug: int, seed: int) -> None:
    """Build the vanilla examples table: originals plus NUM_AUG symmetries per train puzzle."""
    stage = "augment"
    t_start = time.perf_counter()
    check_dirs(stage, input_dir, output)
    lineage = read_lineage(input_dir, stage)
    splits = tables_of(lineage)  # train, test (and train_vanilla)
    task = lineage_task(lineage)
    if task.max_aug is not None and num_aug > task.max_aug:
        raise StageError(f"--num-aug {num_aug}: a {task.noun} has {task.max_aug} transformed copies besides itself "
                         f"({task.words['augment_limit']}; {input_dir / LINEAGE} holds {task.noun}s); "
                         f"use 0..{task.max_aug}")
    names = [f"{split}.parquet" for split in splits]
    for name in names:  # the bytes the subsample stage recorded, before any is used
        verify_table(input_dir / name, lineage, stage)
    tables = {split: read_subsample(input_dir / f"{split}.parquet", stage, task) for split in splits}
    for split in splits:
        require_rows(tables[split].height, input_dir / f"{split}.parquet", stage)
    if task.joint_augment:
        _augment_jointly(task, tables, AugmentRun(input_dir, output, num_aug, seed, lineage, names, t_start))
        return
    groups = tables["train"].height
    if groups * (1 + num_aug) > INT32_MAX:
        raise StageError(f"{groups:,} puzzles x {1 + num_aug:,} examples do not fit Int32 ids; lower --num-aug")
    check_examples_memory(stage, groups * (1 + num_aug), task, f"--num-aug {num_aug} x {groups:,} puzzles",
                          ["--num-aug", "the subsample stage's --subsample-size"])
    lineage[stage] = {"params": {"seed": seed, "num_aug": num_aug}, "inputs": input_records(input_dir, names),
                      "rows_per_group": {split: 1 + num_aug if split in AUGMENT_STREAMS else 1 for split in splits},
                      "outputs": {}}

    with atomic_output(output, stage=stage) as tmp:
        tmp.mkdir(parents=True)
        for split in splits:
            t0 = time.perf_counter()
            k = num_aug if split in AUGMENT_STREAMS else 0
            df = build_split(tables[split], k, stage_rng(seed, AUGMENT_STREAMS[split]) if k else None, task)
            log(stage, f"built {split}: {tables[split].height:,} puzzles -> {df.height:,} examples, "
                       f"{time.perf_counter() - t0:.1f} s")
            name = f"{split}{EXAMPLES_SUFFIX}"
            check_table(df, 1 + k, str(output / name), stage, built=True, task=task)
            lineage[stage]["outputs"][name] = write_examples(df, tmp / name, stage, output / name, task)
            del df
        write_json(tmp / LINEAGE, lineage)
    log(stage, f"wrote {output} in {time.perf_counter() - t_start:.1f} s")


@dataclass(frozen=True)
class AugmentRun:
    """One run of the stage: its options, the lineage read, the input files, the start time."""

    input_dir: Path
    output: Path
    num_aug: int
    seed: int
    lineage: dict
    names: list[str]
    t_start: float


# Rows the jointly augmented splits are built, validated and written at a time (whole groups: a chunk holds
# at least this many): what bounds the stage's memory, whatever num_aug.
JOINT_CHUNK_ROWS = 1 << 17


def _augment_jointly(task: Task, tables: dict[str, pl.DataFrame], run: AugmentRun) -> None:
    """The splits of a task that augments them together (Task.augment_splits: ARC), built, validated and
    written JOINT_CHUNK_ROWS rows at a time (the tables' bytes as if written whole), with the JSON files the
    task makes (ARC's identifiers.json), each recorded with its sha256."""
    from pipelines.examples_writer import ChunkedExamplesWriter

    stage, output, chunk_rows = "augment", run.output, JOINT_CHUNK_ROWS
    if set(tables) != {"train", "test"}:
        raise StageError(f"{run.input_dir / LINEAGE}: {task.name} builds train and test only (no independent "
                         "vanilla draw: it has no hint dataset); rerun the subsample with --vanilla-draw coupled")
    rows = sum(t.height for t in tables.values()) * (1 + run.num_aug)
    check_examples_memory(stage, min(rows, 2 * chunk_rows), task,
                          f"--num-aug {run.num_aug} x {rows // (1 + run.num_aug):,} pairs, {chunk_rows:,} rows at a time",
                          ["--num-aug", "the subsample stage's --subsample-size and --test-size"])
    t0 = time.perf_counter()
    columns = {split: {c: t.get_column(c).to_numpy() for c in task.augment_reads} for split, t in tables.items()}
    chunks, files = task.augment_splits(columns, run.num_aug, stage_rng(run.seed, "augment"), chunk_rows)
    record = {"params": {"seed": run.seed, "num_aug": run.num_aug}, "inputs": input_records(run.input_dir, run.names),
              "rows_per_group": {}, "outputs": {}}
    run.lineage[stage] = record
    with atomic_output(output, stage=stage) as tmp:
        tmp.mkdir(parents=True)
        checks = {split: _JointChecks(str(output / f"{split}{EXAMPLES_SUFFIX}")) for split in tables}
        writers = {split: ChunkedExamplesWriter(tmp / f"{split}{EXAMPLES_SUFFIX}", task.seq_len) for split in tables}
        for chunk in chunks:
            for split, ex in chunk.items():
                df = _joint_frame(ex, tables[split], task)
                checks[split].check(df, stage, task)
                writers[split].append(df, {"inputs": ex.inputs, "labels": ex.labels})
        log(stage, f"built and validated {', '.join(f'{s} {w.rows:,}' for s, w in writers.items())} examples, "
                   f"{time.perf_counter() - t0:.1f} s")
        for split, writer in writers.items():
            name = f"{split}{EXAMPLES_SUFFIX}"
            checks[split].finish(stage)
            writer.close(stage, output / name)
            record["outputs"][name] = examples_record(tmp / name, writer.rows, task)
        for name, value in files.items():
            write_json(tmp / name, value)
        record["files"] = input_records(tmp, list(files))
        write_json(tmp / LINEAGE, run.lineage)
    log(stage, f"wrote {output} in {time.perf_counter() - run.t_start:.1f} s")


def _joint_frame(ex, table: pl.DataFrame, task: Task) -> pl.DataFrame:
    from schemas.examples import to_frame

    return to_frame(ex, table.get_column("source"), table.get_column("rating").cast(pl.Int64).to_numpy(),
                    table.get_column("raw_index").to_numpy(), task)


class _JointChecks:
    """The examples schema of one split, a chunk at a time: every chunk is validated with its ids counted
    from 0 (the schema's group and row numbering), and what spans chunks is checked here: ids go on from
    the chunk before, and no two groups' originals come from the same raw row."""

    def __init__(self, shown: str):
        self.shown, self.rows, self.groups, self.seconds = shown, 0, 0, 0.0
        self.raw_rows: list[np.ndarray] = []  # the originals' raw_index

    def check(self, df: pl.DataFrame, stage: str, task: Task) -> None:
        from schemas.examples import validate_examples

        if df.height == 0:
            return
        t0 = time.perf_counter()
        group_id, puzzle_id = df.get_column("group_id").to_numpy(), df.get_column("puzzle_id").to_numpy()
        where = f"{self.shown}, rows {self.rows:,}..{self.rows + df.height - 1:,} (numbered from 0 there)"
        if puzzle_id[0] != self.rows or group_id[0] != self.groups:
            raise StageError(f"internal error, nothing was written: {where} starts at puzzle_id {puzzle_id[0]}, "
                             f"group_id {group_id[0]}, not {self.rows}, {self.groups}")
        rebased = df.with_columns(pl.col("group_id") - self.groups, pl.col("puzzle_id") - self.rows)
        report = validate_examples(rebased, task, path=where)
        if not report.ok:
            raise StageError(f"internal error, the built table failed validation and nothing was written:\n"
                             f"{report.message()}")
        self.raw_rows.append(df.filter(pl.col("variant") == "original").get_column("raw_index").to_numpy())
        self.rows, self.groups = self.rows + df.height, int(group_id[-1]) + 1
        self.seconds += time.perf_counter() - t0

    def finish(self, stage: str) -> None:
        raw = np.concatenate(self.raw_rows) if self.raw_rows else np.zeros(0, np.int64)
        values, counts = np.unique(raw, return_counts=True)
        if (counts > 1).any():
            raise StageError(f"internal error, nothing was written: {self.shown}: raw_index {values[counts > 1][:5]} "
                             "in two groups' originals")
        log(stage, f"validated {self.shown}: {self.rows:,} rows, {self.seconds:.1f} s")
