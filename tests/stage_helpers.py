"""Shared by tests/test_stages.py and tests/test_validate.py: the dataset stages run for real
(click's CliRunner) on the real puzzles; the chain itself is the `built` fixture (conftest.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
from click.testing import CliRunner

from conftest import REAL_SUDOKU as REAL
from pipelines.cli import cli
from pipelines.io import StageError
from pipelines.output_records import write_record
from pipelines.dataset_checks import dataset_problems
from pipelines.validate import problems_message

SUBSAMPLE, NUM_AUG = 20, 4
VANILLA, HINT = f"sudoku-csv-{SUBSAMPLE}-aug-{NUM_AUG}", f"sudoku-csv-{SUBSAMPLE}-aug-{NUM_AUG}-hint"


def run(*args):
    """``hrm ARGS`` in this process (paths and numbers given as themselves are passed as text)."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def make_raw(directory: Path, valid: pl.DataFrame | None = None) -> Path:
    """The raw stage's layout, from the real puzzles: 30 train and 9 test rows, stats.json."""
    valid = valid if valid is not None else pl.read_csv(REAL / "valid.csv", infer_schema=False)
    valid = valid.with_columns(pl.col("rating").cast(pl.Int64))
    directory.mkdir(parents=True, exist_ok=True)
    valid[:30].write_parquet(directory / "train.parquet")
    valid[30:].write_parquet(directory / "test.parquet")
    (directory / "stats.json").write_text(json.dumps({"source": "csv", "csv": {"input": "data/csv"}}) + "\n")
    write_record(directory, "raw")  # as `hrm raw` records its output
    return directory


def record_table(path: Path) -> None:
    """Record an edited table's new sha256 where the stage that wrote it records it (lineage.json's
    outputs for augment and hints, the output's record for raw and subsample), as someone forging the
    record would: what the next stage checks beyond the hash can then be tested."""
    from pipelines.dataset_io import LINEAGE, table_writer

    lineage_path = path.parent / LINEAGE
    lineage = json.loads(lineage_path.read_text()) if lineage_path.is_file() else {}
    writer = table_writer(lineage)
    if writer in ("augment", "hints"):
        lineage[writer]["outputs"][path.name]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        lineage_path.write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")
    else:
        write_record(path.parent, writer)


def build(root: Path, hints: bool = True, shard_mb: str = "0.02", raw: Path | None = None,
          vanilla_draw: str = "coupled") -> dict:
    raw = raw or make_raw(root / "raw")
    logs = {
        "subsample": ok("subsample", "--input", str(raw), "--output", str(root / "subsample"), "--seed", "3",
                        "--subsample-size", str(SUBSAMPLE), "--test-size", "0", "--vanilla-draw", vanilla_draw),
        "augment": ok("augment", "--input", str(root / "subsample"), "--output", str(root / "augment"), "--seed", "3",
                      "--num-aug", str(NUM_AUG)),
        "hints": ok("hints", "--input", str(root / "augment"), "--output", str(root / "hints"), "--seed", "3",
                    "--enabled", "true" if hints else "false"),
        "shard": ok("shard", "--input", str(root / "hints"), "--output", str(root / "datasets"),
                    "--shard-max-mb", shard_mb),
    }
    return logs


def digest_tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def fails(*args) -> str:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def verify_dataset(dataset: Path) -> dict:
    """The manifest of a dataset folder that passes `hrm validate shards`; else StageError listing
    every problem."""
    manifest, problems = dataset_problems(dataset)
    if problems:
        raise StageError(problems_message([p.message for p in problems]))
    return manifest
