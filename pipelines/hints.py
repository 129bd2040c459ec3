"""``hrm hints``: the hint dataset's examples table (the fork's ``--hint``).

With ``--enabled true``: after every train example (original or augmented) an easier
copy of it (hrm.build.add_hints): k extra givens copied from the label into k blank
cells chosen uniformly without replacement, k uniform in [1, blanks - 1]; same label,
same transform, variant ``hint``, ``parent_id`` = the example it was made from, its
own puzzle in the same group. The table holds every vanilla row too (the shard stage
takes the vanilla dataset from it, so the vanilla examples are built once). As in the
fork, the test split is not hinted: it passes through unchanged.

With ``--enabled false`` both tables pass through unchanged (byte copies) and only the
vanilla dataset is sharded.

Reads ``INPUT/{train,test}.arrow`` and ``INPUT/lineage.json`` (the augment stage);
writes ``OUTPUT/{train,test}.arrow`` (examples tables, Arrow IPC) and ``OUTPUT/lineage.json``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click
import numpy as np
import polars as pl

from pipelines.augment import INT32_MAX, check_table
from pipelines.io import StageError, atomic_output
from pipelines.subsample import (
    EXAMPLES_SUFFIX, LINEAGE, SPLITS, already_validated, check_dirs, input_records, log, read_examples_file,
    read_lineage, schema_fingerprint, sha256_file, stage_rng, write_examples, write_json,
)


def rows_per_group(lineage: dict, split: str) -> int | None:
    """Rows per group of the table the last stage in ``lineage`` wrote (None if it does not say)."""
    per = (lineage.get("augment") or {}).get("rows_per_group", {}).get(split)
    if per is not None and split == "train" and (lineage.get("hints") or {}).get("params", {}).get("enabled"):
        per *= 2
    return per


def read_examples(path: Path, rows_per_group: int | None, stage: str, upstream: dict | None = None) -> pl.DataFrame:
    """Read and validate an examples table; StageError naming the file and rows.

    ``upstream``: the lineage record of the stage that wrote the file; when the file is
    byte for byte what that stage validated (same checks), it is not validated again.
    """
    df = read_examples_file(path, stage)
    if already_validated(path, df, upstream):
        log(stage, f"checked {path}: sha256 matches the table the previous stage validated; not re-validated")
    else:
        check_table(df, rows_per_group, str(path), stage, built=False)
    return df


def upstream_outputs(lineage: dict, stage: str) -> dict:
    """The ``outputs`` records of the stage that wrote the examples tables ``stage`` reads."""
    previous = {"hints": "augment", "shard": "hints"}[stage]
    return (lineage.get(previous) or {}).get("outputs") or {}


def hint_table(df: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """The vanilla table ``df`` with a hint after every row."""
    from hrm.build import ORIGINAL, add_hints
    from schemas.examples import from_frame, to_frame

    ex = from_frame(df)
    starts = np.flatnonzero(ex.variant == ORIGINAL)  # one per group, in group order (validated)
    sources = df.get_column("source").gather(starts)
    ratings = df.get_column("rating").to_numpy()[starts]
    return to_frame(add_hints(ex, rng), sources, ratings)


@click.command("hints")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("data/augment"), help="Augment stage output.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/hints"),
              help="Directory to write (replaced as a whole on success).")
@click.option("--enabled", type=bool, default=True,
              help="true: add a hint example after every train example; false: pass the tables through.")
@click.option("--seed", type=int, default=0, help="Seed of the hint draws.")
def hints(input_dir: Path, output: Path, enabled: bool, seed: int) -> None:
    """Add an easier copy (extra givens from the answer) after every train example."""
    stage = "hints"
    t_start = time.perf_counter()
    check_dirs(stage, input_dir, output)
    lineage = read_lineage(input_dir, stage)
    names = [f"{split}{EXAMPLES_SUFFIX}" for split in SPLITS]
    expected = {split: rows_per_group(lineage, split) for split in SPLITS}
    records = upstream_outputs(lineage, stage)
    tables = {split: read_examples(input_dir / name, expected[split], stage, records.get(name))
              for split, name in zip(SPLITS, names)}
    if enabled and 2 * tables["train"].height > INT32_MAX:
        raise StageError(f"{2 * tables['train'].height:,} examples do not fit Int32 ids")
    lineage[stage] = {"params": {"seed": seed, "enabled": enabled}, "inputs": input_records(input_dir, names),
                      "outputs": {}}

    with atomic_output(output) as tmp:
        tmp.mkdir(parents=True)
        for split, name in zip(SPLITS, names):
            target, shown = tmp / name, output / name
            if not (enabled and split == "train"):
                shutil.copyfile(input_dir / name, target)
                lineage[stage]["outputs"][name] = {"rows": tables[split].height, "sha256": sha256_file(target),
                                                   "validated_with": schema_fingerprint()}
                log(stage, f"wrote {shown}: {tables[split].height:,} rows, unchanged "
                           f"({'hints disabled' if not enabled else 'the test split is not hinted'})")
                continue
            t0 = time.perf_counter()
            df = hint_table(tables[split], stage_rng(seed, "hints"))
            log(stage, f"built {split}: {tables[split].height:,} -> {df.height:,} examples, "
                       f"{time.perf_counter() - t0:.1f} s")
            check_table(df, rows_per_group(lineage, split), str(shown), stage, built=True)
            lineage[stage]["outputs"][name] = write_examples(df, target, stage, shown)
            del df
        write_json(tmp / LINEAGE, lineage)
    log(stage, f"wrote {output} in {time.perf_counter() - t_start:.1f} s")
