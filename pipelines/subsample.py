"""``hrm subsample``: choose the puzzles the datasets are built from.

Train split: ``--subsample-size`` rows drawn uniformly without replacement (seeded), in
draw order, as the fork's builder does (the fork = the Augmented HRM paper's code, README
"Reference code"; 0, or the split's size, keeps every row in file order; a size above the
split's is refused, as is an empty input split).
With ``--vanilla-draw independent``, a second train draw of the same size from its own seed stream,
``train_vanilla.parquet``, from which the vanilla dataset is built (the fork builds its two datasets
in independent runs); by default (``coupled``) the vanilla dataset is the hint dataset minus its hints.
Test split: passed through, or capped by ``--test-size`` to a
uniform sample kept in file order (0 = the whole split, as in the paper; the cap is a
deviation for quick runs).

Reads ``INPUT/{train,test}.parquet`` (the raw table; checked against the sha256 the raw stage recorded
in its output's ``.hrm-record.json``) and, when present,
``INPUT/stats.json`` (the raw source and revision, and the task: Sudoku or Maze, recorded in the
lineage for the later stages); the rows it keeps are validated by the task's raw schema
(schemas/raw.py; a bad one is named by its row in the file). Writes
``OUTPUT/{train,test}.parquet`` (and ``train_vanilla.parquet``): the raw columns plus ``raw_index`` (the row in the raw
file), and ``OUTPUT/lineage.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import polars as pl

from pipelines.dataset_io import (
    LINEAGE, SPLITS, VANILLA_DRAWS, VANILLA_TRAIN, check_dirs, data_settings, input_records, require_rows, stage_rng,
    verify_table, write_json,
)
from hrm.tasks import Task, recorded_task
from pipelines.atomic_replace import atomic_output
from pipelines.io import Count, SEED, StageError, human_bytes, log
from pipelines.tables import read_table

# The subsample tables' Parquet settings (fixed: the same rows give the same bytes).
SUBSAMPLE_PARQUET_OPTIONS = dict(compression="zstd", compression_level=1, statistics=False)

# What the stage writes in its output folder: it replaces that, and refuses a folder holding anything else.


def write_table(df: pl.DataFrame, path: Path, stage: str, shown: Path) -> None:
    """Write one Parquet table (fixed settings: the same rows give the same bytes) and log it (its sha256
    goes into the output's record, which the next stage checks)."""
    t0 = time.perf_counter()
    df.write_parquet(path, **SUBSAMPLE_PARQUET_OPTIONS)
    log(stage, f"wrote {shown}: {df.height:,} rows, {human_bytes(path.stat().st_size)}, "
               f"{time.perf_counter() - t0:.1f} s")


# --------------------------------------------------------------------------- raw source


def read_raw_stats(stats_path: Path) -> dict:
    """The raw stage's stats.json ({} when there is none), read once; StageError naming the file when it
    is not JSON or not an object."""
    if not stats_path.is_file():
        return {}
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"{stats_path}: cannot read as JSON ({exc})") from None
    if not isinstance(stats, dict):
        raise StageError(f"{stats_path}: not the raw stage's statistics (a JSON object); rerun `hrm raw`")
    return stats


def raw_task(stats: dict, stats_path: Path) -> Task:
    """The raw table's task from its statistics (hrm.tasks.recorded_task: the raw stage names it)."""
    try:
        return recorded_task(stats.get("task"))
    except ValueError as exc:
        raise StageError(f"{stats_path}: task {exc}") from None


def raw_source_info(stats: dict, task: Task) -> dict:
    """Source and revision of the raw table (for the builtin source: its seeds and the task's generator
    options), from its statistics, and its task where its records name it (Task.records_name: a Sudoku
    lineage names none, as those built before mazes)."""
    info = {"source": stats.get("source", "unknown")}
    info.update(task.recorded_name())
    hf = stats.get("hf") or {}
    if info["source"] == "hf":
        info.update(hf_repo=hf.get("repo_id"), revision=hf.get("revision"), resolved_sha=hf.get("resolved_sha"))
    elif info["source"] == "builtin":
        builtin = stats.get("builtin") or {}
        # The seeds and the task's own generator controls (a maze records min_path, not Sudoku's three).
        info.update({k: builtin.get(k) for k in ("seed", "split_seeds", *(o.name for o in task.generator_options))})
    return info


def _read_raw(path: Path, stage: str) -> pl.DataFrame:
    t0 = time.perf_counter()
    df = read_table(path)
    log(stage, f"read {path}: {df.height:,} rows, {time.perf_counter() - t0:.1f} s")
    return df


def _picked_rows(df: pl.DataFrame, idx: np.ndarray, path: Path, stage: str, task: Task) -> pl.DataFrame:
    """The rows ``idx`` of a raw table, validated (layout and the task's rules; the uniqueness
    check ran in the raw stage). Only the rows the datasets use are checked: the raw stage
    validated the whole file, and Sudoku-Extreme's train split has 3.8 M rows. A bad row is
    named by its row in the file."""
    import dataclasses

    from schemas.raw import raw_validator

    t0 = time.perf_counter()
    rows = df[idx] if len(idx) < df.height or not np.array_equal(idx, np.arange(df.height)) else df
    report = raw_validator(task)(rows, check_unique=False, path=str(path))
    if not report.ok:
        in_file = pl.Series(idx, dtype=pl.Int64)
        report = dataclasses.replace(
            report,
            problems=report.problems.with_columns(pl.col("row").map_batches(lambda r: in_file.gather(r))),
            rejected=report.rejected.with_columns(pl.col("row").map_batches(lambda r: in_file.gather(r))),
        )
        raise StageError(report.message())
    log(stage, f"validated the {rows.height:,} rows used of {path}, {time.perf_counter() - t0:.1f} s")
    return rows.select(task.raw_columns).with_columns(pl.col("rating").cast(pl.Int64),
                                                 raw_index=pl.Series(idx, dtype=pl.Int64))


# --------------------------------------------------------------------------- command


@click.command("subsample")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data/raw"),
              help="Raw stage output: train.parquet, test.parquet (and stats.json).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/subsample"),
              help="Directory to write (replaced as a whole on success).")
@click.option("--subsample-size", type=Count(0), default=1000,
              help="Train puzzles drawn uniformly without replacement; 0 = all, in file order "
                   "(more than the split holds: refused).")
@click.option("--test-size", type=Count(0), default=1000,
              help="Cap on test puzzles (uniform sample, file order kept); 0 = the whole test split (paper).")
@click.option("--vanilla-draw", type=click.Choice(VANILLA_DRAWS), default="coupled",
              help="coupled: the vanilla dataset is the hint dataset minus its hints (same puzzles and symmetries); "
                   "independent: draw its train puzzles (and later its symmetries) again, as the fork's two builds.")
@click.option("--seed", type=SEED, default=0, help="Seed of the draws.")
@data_settings("subsample")
def subsample(input_dir: Path, output: Path, subsample_size: int, test_size: int, vanilla_draw: str,
              seed: int) -> None:
    """Draw the train puzzles (and cap the test split) that the datasets are built from."""
    stage = "subsample"
    t_start = time.perf_counter()
    check_dirs(stage, input_dir, output)
    stats = read_raw_stats(input_dir / "stats.json")
    task = raw_task(stats, input_dir / "stats.json")
    names = [f"{split}.parquet" for split in SPLITS]
    for name in names:  # the bytes the raw stage recorded, before any is used
        verify_table(input_dir / name, {}, stage)
    tables = {split: _read_raw(input_dir / f"{split}.parquet", stage) for split in SPLITS}
    for split in SPLITS:
        require_rows(tables[split].height, input_dir / f"{split}.parquet", stage)
    names_out = ("train", "test") + ((VANILLA_TRAIN,) if vanilla_draw == "independent" else ())
    reads = {split: {"rows": tables[split].height,
                     **{c: tables[split].get_column(c).to_numpy() for c in task.subsample_reads}} for split in SPLITS}
    try:
        picks = task.pick_rows(reads["train"], reads["test"], (subsample_size, test_size),
                               lambda stream: stage_rng(seed, stream), names_out)
    except ValueError as exc:
        raise StageError(f"--subsample-size {subsample_size:,}: {exc} of {input_dir / 'train.parquet'}; draw at most "
                         "that many (or 0 for all of them, in file order)") from None
    source = {name: "test" if name == "test" else "train" for name in picks}  # the raw split each table is drawn from
    picked = {name: _picked_rows(tables[source[name]], idx, input_dir / f"{source[name]}.parquet", stage, task)
              for name, idx in picks.items()}
    lineage = {
        "raw": raw_source_info(stats, task),
        stage: {
            "params": {"seed": seed, "subsample_size": subsample_size, "test_size": test_size,
                       "vanilla_draw": vanilla_draw},
            "inputs": input_records(input_dir, names + ["stats.json"]),
            "raw_rows": {split: tables[split].height for split in SPLITS},
            "groups": {name: task.count_groups({"rows": len(idx), **{c: reads[source[name]][c][idx]
                                                                    for c in task.subsample_reads}})
                       for name, idx in picks.items()},
        },
    }
    if task.originals_per_group != "one":  # a group is several rows: the raw splits' groups too
        lineage[stage]["raw_groups"] = {split: task.count_groups(reads[split]) for split in SPLITS}
    with atomic_output(output, stage=stage) as tmp:
        tmp.mkdir(parents=True)
        for name, df in picked.items():
            write_table(df, tmp / f"{name}.parquet", stage, output / f"{name}.parquet")
        write_json(tmp / LINEAGE, lineage)
    groups = lineage[stage]["groups"]
    log(stage, f"wrote {output} (train {groups['train']:,}, test {groups['test']:,} puzzles) "
               f"in {time.perf_counter() - t_start:.1f} s")
