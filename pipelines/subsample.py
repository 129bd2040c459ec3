"""``hrm subsample``: choose the puzzles the datasets are built from.

Train split: ``--subsample-size`` rows drawn uniformly without replacement (seeded), in
draw order, as the fork's builder does (0, or a size not below the split, keeps every
row in file order). Test split: passed through, or capped by ``--test-size`` to a
uniform sample kept in file order (0 = the whole split, as in the paper; the cap is a
deviation for quick runs).

Reads ``INPUT/{train,test}.parquet`` (the raw table) and, when present,
``INPUT/stats.json`` (the raw source and revision); the rows it keeps are validated
(schemas/raw.py; a bad one is named by its row in the file). Writes
``OUTPUT/{train,test}.parquet``: the raw columns plus ``raw_index`` (the row in the raw
file), and ``OUTPUT/lineage.json``.

This module also holds the helpers the dataset stages share (lineage, hashing, logging).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path

import click
import numpy as np
import polars as pl

from pipelines.io import StageError, atomic_output, human_bytes, read_table, sha256_of

SPLITS = ("train", "test")
LINEAGE = "lineage.json"
EXAMPLES_SUFFIX = ".arrow"  # examples tables (augment, hints): see write_examples
PARQUET_OPTIONS = dict(compression="zstd", compression_level=1, statistics=False)
# Stage keys mixed into the seed: each stage (and split) draws from its own stream.
STREAMS = {"subsample": 1, "test_cap": 2, "augment": 3, "hints": 4}


# --------------------------------------------------------------------------- shared helpers


def log(stage: str, message: str) -> None:
    click.echo(f"{stage}: {message}", err=True)


def stage_rng(seed: int, stream: str) -> np.random.Generator:
    """The generator of one stage (or split): independent streams derived from one seed."""
    return np.random.default_rng([STREAMS[stream], seed])


def sha256_file(path: Path) -> str:
    stat = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # A stage hashes the same input for its lineage and its validation skip: read it once.
    return sha256_of(path)


def schema_fingerprint() -> str:
    """Identifies the examples checks (schema and kernels): a table validated under the same
    fingerprint, with the same sha256, need not be validated again."""
    import hrm.build
    import hrm.sudoku
    import schemas.examples

    h = hashlib.sha256()
    for module in (schemas.examples, hrm.build, hrm.sudoku):  # sudoku: the solution and transform kernels
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def read_lineage(input_dir: Path, stage: str, required: bool = True) -> dict:
    """The upstream lineage (``INPUT/lineage.json``); a clear error when it is missing."""
    path = input_dir / LINEAGE
    if not path.is_file():
        if not required:
            return {}
        raise StageError(f"{path}: file not found; --input must be the output directory of the stage before "
                         f"`hrm {stage}` (see dvc.yaml)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: cannot read as JSON ({exc})") from None


def write_json(path: Path, data: dict) -> None:
    """Sorted keys, fixed indentation, trailing newline: same data, same bytes."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def check_dirs(stage: str, input_dir: Path, output: Path) -> None:
    if not input_dir.is_dir():
        raise StageError(f"{input_dir}: input directory not found (run the stage before `hrm {stage}`)")
    inp, out = input_dir.resolve(), output.resolve()
    if out == inp or inp in out.parents or out in inp.parents:
        raise StageError(f"{output}: the output must not be the input directory, inside it or above it "
                         "(the output is replaced as a whole; inputs are never modified)")
    if output.exists() and not output.is_dir():
        raise StageError(f"{output}: exists and is not a directory")


def write_table(df: pl.DataFrame, path: Path, stage: str, shown: Path) -> None:
    """Write one Parquet table (fixed settings: the same rows give the same bytes) and log it."""
    t0 = time.perf_counter()
    df.write_parquet(path, **PARQUET_OPTIONS)
    log(stage, f"wrote {shown}: {df.height:,} rows, {human_bytes(path.stat().st_size)}, "
               f"{time.perf_counter() - t0:.1f} s")


def write_examples(df: pl.DataFrame, path: Path, stage: str, shown: Path) -> dict:
    """Write a validated examples table; returns its lineage record (rows, sha256, schema).

    Arrow IPC (Feather v2), uncompressed, not Parquet: Parquet stores each uint8 of a
    fixed-size array as an INT32 value with repetition levels, which makes a 1M-row
    examples table (223 MB here, 117 MB as zstd Parquet) about 15x slower to read and 5x
    slower to write. One record batch, so that the next stage reads it back in one piece
    (no re-chunking copy). Same columns and polars dtypes either way.
    """
    import pyarrow as pa

    t0 = time.perf_counter()
    table = df.rechunk().to_arrow().combine_chunks()
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    log(stage, f"wrote {shown}: {df.height:,} rows, {human_bytes(path.stat().st_size)}, "
               f"{time.perf_counter() - t0:.1f} s")
    return {"rows": df.height, "sha256": sha256_file(path), "validated_with": schema_fingerprint()}


def read_examples_file(path: Path, stage: str, *, quiet: bool = False) -> pl.DataFrame:
    """Read an examples table (Arrow IPC); a missing or corrupt file is a StageError naming it."""
    if not path.is_file():
        raise StageError(f"{path}: file not found (run the stage before `hrm {stage}`)")
    t0 = time.perf_counter()
    try:
        df = pl.read_ipc(path).rechunk()
    except Exception as exc:  # polars raises many kinds for a truncated or foreign file
        raise StageError(f"{path}: cannot read as an Arrow IPC examples table ({type(exc).__name__}: {exc})") from None
    if not quiet:
        log(stage, f"read {path}: {df.height:,} rows, {time.perf_counter() - t0:.1f} s")
    return df


def already_validated(path: Path, df: pl.DataFrame, record: dict | None) -> bool:
    """True when ``path`` is byte for byte the table an upstream stage validated (same sha256,
    rows and checks) before writing it: validating it again would repeat the same work."""
    from schemas.examples import POLARS_SCHEMA

    return bool(
        record
        and record.get("validated_with") == schema_fingerprint()
        and record.get("rows") == df.height
        and dict(df.schema) == POLARS_SCHEMA
        and record.get("sha256") == sha256_file(path)
    )


def input_records(input_dir: Path, names: list[str]) -> dict:
    """sha256 and size of the input files a stage read (the lineage of what it writes)."""
    return {name: {"bytes": (input_dir / name).stat().st_size, "sha256": sha256_file(input_dir / name)}
            for name in names if (input_dir / name).is_file()}


# --------------------------------------------------------------------------- raw source


def raw_source_info(stats_path: Path) -> dict:
    """Source and revision of the raw table, from the raw stage's stats.json (if present)."""
    if not stats_path.is_file():
        return {"source": "unknown"}
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"{stats_path}: cannot read as JSON ({exc})") from None
    info = {"source": stats.get("source", "unknown")}
    hf = stats.get("hf") or {}
    if info["source"] == "hf":
        info.update(hf_repo=hf.get("repo_id"), revision=hf.get("revision"), resolved_sha=hf.get("resolved_sha"))
    elif info["source"] == "builtin":
        builtin = stats.get("builtin") or {}
        info.update({k: builtin.get(k) for k in ("seed", "split_seeds", "min_blanks", "max_blanks", "min_rating")})
    return info


def _read_raw(path: Path, stage: str) -> pl.DataFrame:
    t0 = time.perf_counter()
    df = read_table(path)
    log(stage, f"read {path}: {df.height:,} rows, {time.perf_counter() - t0:.1f} s")
    return df


def _picked_rows(df: pl.DataFrame, idx: np.ndarray, path: Path, stage: str) -> pl.DataFrame:
    """The rows ``idx`` of a raw table, validated (layout and Sudoku rules; the solver's
    uniqueness check ran in the raw stage). Only the rows the datasets use are checked:
    the raw stage validated the whole file, and Sudoku-Extreme's train split has 3.8 M
    rows. A bad row is named by its row in the file."""
    import dataclasses

    from schemas.raw import RAW_COLUMNS, validate_raw

    t0 = time.perf_counter()
    rows = df[idx] if len(idx) < df.height or not np.array_equal(idx, np.arange(df.height)) else df
    report = validate_raw(rows, check_unique=False, path=str(path))
    if not report.ok:
        in_file = pl.Series(idx, dtype=pl.Int64)
        report = dataclasses.replace(
            report,
            problems=report.problems.with_columns(pl.col("row").map_batches(lambda r: in_file.gather(r))),
            rejected=report.rejected.with_columns(pl.col("row").map_batches(lambda r: in_file.gather(r))),
        )
        raise StageError(report.message())
    log(stage, f"validated the {rows.height:,} rows used of {path}, {time.perf_counter() - t0:.1f} s")
    return rows.select(RAW_COLUMNS).with_columns(pl.col("rating").cast(pl.Int64),
                                                 raw_index=pl.Series(idx, dtype=pl.Int64))


# --------------------------------------------------------------------------- command


@click.command("subsample")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data/raw"),
              help="Raw stage output: train.parquet, test.parquet (and stats.json).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("data/subsample"),
              help="Directory to write (replaced as a whole on success).")
@click.option("--subsample-size", type=click.IntRange(min=0), default=1000,
              help="Train puzzles drawn uniformly without replacement; 0 = all, in file order.")
@click.option("--test-size", type=click.IntRange(min=0), default=1000,
              help="Cap on test puzzles (uniform sample, file order kept); 0 = the whole test split (paper).")
@click.option("--seed", type=int, default=0, help="Seed of the draws.")
def subsample(input_dir: Path, output: Path, subsample_size: int, test_size: int, seed: int) -> None:
    """Draw the train puzzles (and cap the test split) that the datasets are built from."""
    stage = "subsample"
    t_start = time.perf_counter()
    check_dirs(stage, input_dir, output)
    from hrm.build import cap_indices, subsample_indices

    names = [f"{split}.parquet" for split in SPLITS]
    tables = {split: _read_raw(input_dir / f"{split}.parquet", stage) for split in SPLITS}
    picks = {
        "train": subsample_indices(stage_rng(seed, "subsample"), tables["train"].height, subsample_size),
        "test": cap_indices(stage_rng(seed, "test_cap"), tables["test"].height, test_size),
    }
    picked = {split: _picked_rows(tables[split], picks[split], input_dir / f"{split}.parquet", stage)
              for split in SPLITS}
    if subsample_size > tables["train"].height:
        log(stage, f"note: --subsample-size {subsample_size:,} is not below the {tables['train'].height:,} train "
                   "puzzles; keeping them all")
    lineage = {
        "raw": raw_source_info(input_dir / "stats.json"),
        stage: {
            "params": {"seed": seed, "subsample_size": subsample_size, "test_size": test_size},
            "inputs": input_records(input_dir, names + ["stats.json"]),
            "raw_rows": {split: tables[split].height for split in SPLITS},
            "groups": {split: len(idx) for split, idx in picks.items()},
        },
    }
    with atomic_output(output) as tmp:
        tmp.mkdir(parents=True)
        for split in SPLITS:
            write_table(picked[split], tmp / f"{split}.parquet", stage, output / f"{split}.parquet")
        write_json(tmp / LINEAGE, lineage)
    log(stage, f"wrote {output} (train {len(picks['train']):,}, test {len(picks['test']):,} puzzles) "
               f"in {time.perf_counter() - t_start:.1f} s")
