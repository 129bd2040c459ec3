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
    input_records, lineage_task, read_lineage, read_subsample, require_rows, stage_rng, tables_of, verify_table,
    write_examples, write_json,
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


def _augment_jointly(task: Task, tables: dict[str, pl.DataFrame], run: AugmentRun) -> None:
    """The splits of a task that augments them together (Task.augment_splits: ARC), validated, then written
    with the JSON files the task makes (ARC's identifiers.json), each recorded with its sha256."""
    from schemas.examples import to_frame

    stage, output = "augment", run.output
    if set(tables) != {"train", "test"}:
        raise StageError(f"{run.input_dir / LINEAGE}: {task.name} builds train and test only (no independent "
                         "vanilla draw: it has no hint dataset); rerun the subsample with --vanilla-draw coupled")
    rows = sum(t.height for t in tables.values()) * (1 + run.num_aug)
    check_examples_memory(stage, rows, task, f"--num-aug {run.num_aug} x {rows // (1 + run.num_aug):,} pairs",
                          ["--num-aug", "the subsample stage's --subsample-size and --test-size"])
    t0 = time.perf_counter()
    columns = {split: {c: t.get_column(c).to_numpy() for c in task.augment_reads} for split, t in tables.items()}
    built, files = task.augment_splits(columns, run.num_aug, stage_rng(run.seed, "augment"))
    log(stage, f"built {', '.join(f'{s} {len(e):,}' for s, e in built.items())} examples, "
               f"{time.perf_counter() - t0:.1f} s")
    record = {"params": {"seed": run.seed, "num_aug": run.num_aug}, "inputs": input_records(run.input_dir, run.names),
              "rows_per_group": {}, "outputs": {}}
    run.lineage[stage] = record
    with atomic_output(output, stage=stage) as tmp:
        tmp.mkdir(parents=True)
        for split, ex in built.items():
            t = tables[split]
            df = to_frame(ex, t.get_column("source"), t.get_column("rating").cast(pl.Int64).to_numpy(),
                          t.get_column("raw_index").to_numpy(), task)
            name = f"{split}{EXAMPLES_SUFFIX}"
            check_table(df, None, str(output / name), stage, built=True, task=task)
            record["outputs"][name] = write_examples(df, tmp / name, stage, output / name, task)
        for name, value in files.items():
            write_json(tmp / name, value)
        record["files"] = input_records(tmp, list(files))
        write_json(tmp / LINEAGE, run.lineage)
    log(stage, f"wrote {output} in {time.perf_counter() - run.t_start:.1f} s")
