"""``hrm hints``: the hint dataset's examples table (the fork's ``--hint``).

With ``--enabled true``: after every train example (original or augmented) an easier
copy of it (hrm.build.add_hints): k extra givens copied from the label into k blank
cells chosen uniformly without replacement, k uniform in [1, blanks - 1]; same label,
same transform, variant ``hint``, ``parent_id`` = the example it was made from, its
own puzzle in the same group. The table holds every vanilla row too (the shard stage
takes the vanilla dataset from it, so the vanilla examples are built once), unless an
independent vanilla draw (``train_vanilla.arrow``) is there: that passes through unhinted. As in
the fork (the Augmented HRM paper's code, README "Reference code"), the test split is not
hinted: it passes through unchanged.

With ``--enabled false`` every table passes through unchanged (byte copies) and only the
vanilla dataset is sharded. Mazes have no hints (the fork's ``--hint`` is Sudoku's): a maze
lineage needs ``--enabled false``.

Reads ``INPUT/{train,test}.arrow`` (and ``train_vanilla.arrow``) and ``INPUT/lineage.json`` (the
augment stage); writes the same tables (examples tables, Arrow IPC) and ``OUTPUT/lineage.json``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click
import numpy as np
import polars as pl

from hrm.tasks import Task
from pipelines.dataset_io import (
    EXAMPLES_SUFFIX, INT32_MAX, LINEAGE, VANILLA_TRAIN, check_dirs, check_table, check_tables_memory, data_settings,
    copy_task_files, examples_record, input_records, lineage_task, read_examples, read_lineage, require_rows, rows_per_group, stage_rng,
    tables_of, verify_table, write_examples, write_json,
)
from pipelines.atomic_replace import atomic_output
from pipelines.io import SEED, StageError, log

# What the stage writes in its output folder: it replaces that, and refuses a folder holding anything else.


def hint_table(df: pl.DataFrame, rng: np.random.Generator, task: Task) -> pl.DataFrame:
    """The vanilla table ``df`` with a hint after every row."""
    from hrm.build import add_hints
    from schemas.examples import derived_frame, from_frame

    return derived_frame(add_hints(from_frame(df, task), rng), df, task)


@click.command("hints")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("data/augment"), help="Augment stage output.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/hints"),
              help="Directory to write (replaced as a whole on success).")
@click.option("--enabled", type=bool, default=True,
              help="true: add a hint example after every train example; false: pass the tables through.")
@click.option("--seed", type=SEED, default=0, help="Seed of the hint draws.")
@data_settings("hints", aliases={"hints": "enabled"})
def hints(input_dir: Path, output: Path, enabled: bool, seed: int) -> None:
    """Add an easier copy (extra givens from the answer) after every train example."""
    stage = "hints"
    t_start = time.perf_counter()
    check_dirs(stage, input_dir, output)
    lineage = read_lineage(input_dir, stage)
    splits = tables_of(lineage)  # train, test (and train_vanilla)
    task = lineage_task(lineage)
    if enabled and not task.has_hints:
        raise StageError(f"{input_dir / LINEAGE}: the tables hold {task.name} examples, which have no hints (the fork's "
                         f"--hint reveals Sudoku digits); run `hrm hints --enabled false` (params: data.hints: false, "
                         f"and the vanilla dataset for train, evaluate and analyze)")
    names = [f"{split}{EXAMPLES_SUFFIX}" for split in splits]
    expected = {split: rows_per_group(lineage, split) for split in splits}
    for name in names:  # the bytes the augment stage recorded in lineage.json, before any is used
        verify_table(input_dir / name, lineage, stage)
    # The tables read, and the hint table of twice the train rows.
    check_tables_memory(stage, [input_dir / name for name in names], 3, ["the augment stage's --num-aug"])
    tables = {split: read_examples(input_dir / name, expected[split], stage, task)
              for split, name in zip(splits, names)}
    for split, name in zip(splits, names):
        require_rows(tables[split].height, input_dir / name, stage)
    if enabled and 2 * tables["train"].height > INT32_MAX:
        raise StageError(f"{2 * tables['train'].height:,} examples do not fit Int32 ids")
    lineage[stage] = {"params": {"seed": seed, "enabled": enabled}, "inputs": input_records(input_dir, names),
                      "outputs": {}}

    with atomic_output(output, stage=stage) as tmp:
        tmp.mkdir(parents=True)
        for split, name in zip(splits, names):
            target, shown = tmp / name, output / name
            if not (enabled and split == "train"):
                shutil.copyfile(input_dir / name, target)
                lineage[stage]["outputs"][name] = examples_record(target, tables[split].height, task)
                why = ("hints disabled" if not enabled else
                       "the independent vanilla draw is not hinted" if split == VANILLA_TRAIN else
                       "the test split is not hinted")
                log(stage, f"wrote {shown}: {tables[split].height:,} rows, unchanged ({why})")
                continue
            t0 = time.perf_counter()
            df = hint_table(tables[split], stage_rng(seed, "hints"), task)
            log(stage, f"built {split}: {tables[split].height:,} -> {df.height:,} examples, "
                       f"{time.perf_counter() - t0:.1f} s")
            check_table(df, rows_per_group(lineage, split), str(shown), stage, built=True, task=task)
            lineage[stage]["outputs"][name] = write_examples(df, target, stage, shown, task)
            del df
        copy_task_files(input_dir, tmp, lineage, stage)
        write_json(tmp / LINEAGE, lineage)
    log(stage, f"wrote {output} in {time.perf_counter() - t_start:.1f} s")
