"""What the dataset stages (subsample, augment, hints, shard) share, so that none imports another.

- their folders: ``check_dirs`` (input and output never overlap), ``lineage.json``
  (``read_lineage``, ``input_records``, ``write_json``);
- their settings: params.yaml's ``data`` section, the keys each stage reads (``DATA_KEYS``,
  ``data_settings``), and the top-level ``seed``;
- their seeded draws: ``stage_rng`` (stream ids in hrm/rng.py);
- their tables: the subsample table (Parquet: the raw columns plus ``raw_index``,
  ``read_subsample``) and the examples tables (Arrow IPC, schemas/examples.py:
  ``write_examples``, ``read_examples``, ``check_table``), with the group size the lineage
  records (``rows_per_group``);
- the sha256 of every table, recorded by the stage that writes it and checked by the stage (and
  ``hrm validate``) that reads it, before anything is computed (``verify_table``): in
  ``lineage.json``'s ``outputs`` for augment and hints, in the output folder's record
  (``.hrm-record.json``) for raw and subsample (their lineage and stats.json predate the hashes,
  and stay byte for byte as they were). A mismatch or a missing record is refused, naming the file.
  Every input table is also validated, every row: a record is never a reason to skip a check
  (it could be edited together with the file it describes).

The task (Sudoku or Maze) comes from the data: the subsample stage copies it from the raw
stage's ``stats.json`` into the lineage's ``raw`` record (``lineage_task``, hrm.tasks.recorded_task:
Sudoku's records name no task, as those built before mazes), and each table is validated by its
task's schema.

``hrm validate examples`` reads the same tables with the same functions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from hrm import rng
from hrm.tasks import Task, recorded_task
from pipelines.io import StageError, check_memory, human_bytes, log
from pipelines.output_records import RECORD, check_apart, claim_output, read_record
from pipelines.tables import read_table
from pipelines.settings import config_file_options
from hrm.manifest import file_sha256, lineage_problems

SPLITS = ("train", "test")
# The train table of an independent vanilla draw (``--vanilla-draw independent``): its own puzzles and
# symmetries, the fork's two-build way; without it the vanilla dataset is the hint dataset minus its hints.
VANILLA_TRAIN = "train_vanilla"
VANILLA_DRAWS = ("coupled", "independent")
LINEAGE = "lineage.json"
EXAMPLES_SUFFIX = ".arrow"  # examples tables (augment, hints): see write_examples
INT32_MAX = 2**31 - 1  # ids and ratings are Int32 in the examples table
# The seed's stream of each draw of the dataset stages (the test cap is the subsample stage's).
STREAMS = {"subsample": rng.SUBSAMPLE, "test_cap": rng.TEST_CAP, "augment": rng.AUGMENT, "hints": rng.HINTS,
           "subsample_vanilla": rng.VANILLA_SUBSAMPLE, "augment_vanilla": rng.VANILLA_AUGMENT}
# params.yaml's data section, shared by the dataset stages: the keys each one reads (its options'
# names; ``hints`` is hints' --enabled). dvc.yaml's params list the same (tests/test_dvc_params.py).
DATA_KEYS = {"subsample": ("subsample_size", "test_size", "vanilla_draw"), "augment": ("num_aug",),
             "hints": ("hints",), "shard": ("shard_max_mb",)}
# The stage whose output each stage reads: its lineage record must be there.
_UPSTREAM = {"augment": "subsample", "hints": "augment", "shard": "hints"}


# --------------------------------------------------------------------------- folders and lineage


def data_settings(stage: str, aliases: dict[str, str] | None = None):
    """``--config-file`` / ``--section data`` of a dataset stage: its ``DATA_KEYS`` of the section (the
    other stages' keys are left alone, any other is refused) and the top-level seed (pipelines.settings)."""
    others = [key for name, keys in DATA_KEYS.items() if name != stage for key in keys]
    return config_file_options("data", aliases, keys=DATA_KEYS[stage], shared=others)


def stage_rng(seed: int, stream: str) -> np.random.Generator:
    """The generator of one draw (``STREAMS``): independent streams derived from one seed."""
    return np.random.default_rng([STREAMS[stream], seed])


def check_dirs(stage: str, input_dir: Path, output: Path) -> None:
    """The input exists, the output is apart from it and holds nothing but this stage's own files."""
    if not input_dir.is_dir():
        raise StageError(f"{input_dir}: input directory not found (run the stage before `hrm {stage}`)")
    check_apart(output, [input_dir])
    claim_output(output, stage)


def require_rows(rows: int, path: Path, stage: str) -> None:
    """An input table of 0 rows is refused, naming it: an empty split makes no dataset."""
    if rows == 0:
        raise StageError(f"{path}: 0 rows; `hrm {stage}` needs at least one row in every split "
                         f"(rebuild the stage before it from an input with puzzles in both splits)")


def read_lineage(input_dir: Path, stage: str, required: bool = True) -> dict:
    """The upstream lineage (``INPUT/lineage.json``); a clear error when it is missing."""
    path = input_dir / LINEAGE
    if not path.is_file():
        if not required:
            return {}
        raise StageError(f"{path}: file not found; --input must be the output directory of the stage before "
                         f"`hrm {stage}` (see dvc.yaml)")
    try:
        lineage = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: cannot read as JSON ({exc})") from None
    problems = lineage_problems(lineage)
    if not problems:  # a well-formed lineage (a JSON object): its task must be one we know
        try:
            lineage_task(lineage)
        except ValueError as exc:
            problems = [f"key raw.task: {exc}"]
    upstream = _UPSTREAM.get(stage)
    if not problems and upstream and not isinstance(lineage.get(upstream), dict):
        problems = [f"key {upstream}: missing; `hrm {stage}` reads the output of `hrm {upstream}`"]
    if not problems:
        require_stage(lineage_task(lineage), stage, path)
    if problems:
        raise StageError("\n".join(f"{path}: {p}" for p in problems[:20])
                         + (f"\n... and {len(problems) - 20:,} more" if len(problems) > 20 else "")
                         + "\n(not the lineage.json the dataset stages write; rebuild the input with the stage "
                           "before, see hrm/manifest.py)")
    return lineage


def write_json(path: Path, data: dict) -> None:
    """Sorted keys, fixed indentation, trailing newline: same data, same bytes."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path, *, fresh: bool = False) -> str:
    """A file's sha256, read once per stage for its lineage (cached by path, size and
    modification time: a stage that writes a table records its hash, the next records it as input).
    ``fresh``: read the bytes again whatever the cache holds (a verification), and cache that."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if fresh or key not in _SHA256:
        if len(_SHA256) >= 256:
            _SHA256.clear()
        _SHA256[key] = file_sha256(path)
    return _SHA256[key]


_SHA256: dict[tuple[str, int, int], str] = {}
# The dataset stages, latest first: the last one a folder's lineage.json names wrote its tables.
_WRITERS = ("hints", "augment", "subsample")


def table_writer(lineage: dict) -> str:
    """The stage that wrote the tables beside ``lineage`` (its lineage.json; {} for the raw stage's folder)."""
    return next((s for s in _WRITERS if isinstance(lineage.get(s), dict)), "raw")


def table_record(path: Path, lineage: dict) -> tuple[str | None, str]:
    """(the sha256 recorded for the table ``path``, or None; where it is recorded): the writer's
    ``outputs`` in ``lineage.json`` (augment, hints), else the record of the folder the raw or subsample
    stage wrote (``.hrm-record.json``, pipelines.output_records.write_record: every file of an output and its sha256)."""
    writer = table_writer(lineage)
    if writer in ("augment", "hints"):
        entry = (lineage[writer].get("outputs") or {}).get(path.name)
        want = entry.get("sha256") if isinstance(entry, dict) else None
        return (want if isinstance(want, str) else None), f"{path.parent / LINEAGE} ({writer}.outputs.{path.name}.sha256)"
    record = read_record(path.parent)
    want = record["files"].get(path.name) if record is not None and record["command"] == writer else None
    return want, f"{path.parent / RECORD} (the `hrm {writer}` record's files.{path.name})"


def verify_table(path: Path, lineage: dict, stage: str) -> str:
    """Refuse the input table ``path`` unless its bytes (read again now) match the sha256 the stage
    that wrote it recorded (:func:`table_record`); a table without a record is refused too. One
    message naming the file and both hashes, and the command that rebuilds it. Returns the sha256."""
    if not path.is_file():
        raise StageError(f"{path}: file not found (run the stage before `hrm {stage}`)")
    writer = table_writer(lineage)
    want, where = table_record(path, lineage)
    rebuild = f"rebuild {path.parent} with `hrm {writer}`"
    if want is None:
        raise StageError(f"{path}: no sha256 recorded for it (expected in {where}), so its content cannot be "
                         f"verified; {rebuild}")
    got = sha256_file(path, fresh=True)
    if got != want:
        from hrm.integrity import mismatch

        raise StageError(f"{mismatch(path, want, got, where)}; {rebuild}")
    return got


def task_files(lineage: dict) -> dict[str, dict]:
    """The task's files beside the tables ({name: {bytes, sha256}}; ARC's identifiers.json), as the augment
    stage recorded them."""
    return (lineage.get("augment") or {}).get("files") or {}


def copy_task_files(input_dir: Path, target: Path, lineage: dict, stage: str) -> dict[str, object]:
    """Copy the task's files (:func:`task_files`) from ``input_dir`` into ``target`` after checking each
    one's bytes against its recorded sha256 (a mismatch: one message naming the file and both hashes);
    returns their parsed JSON by name."""
    from hrm.integrity import IntegrityError, read_recorded

    values = {}
    for name, record in task_files(lineage).items():
        path = input_dir / name
        if not path.is_file():
            raise StageError(f"{path}: file not found (the augment stage wrote it; rebuild {input_dir})")
        try:
            data = read_recorded(path, record.get("sha256"), f"{input_dir / 'lineage.json'} (key files.{name})")
        except IntegrityError as e:
            raise StageError(f"{e}; rebuild {input_dir} before `hrm {stage}`") from None
        (target / name).write_bytes(data)
        values[name] = json.loads(data)
    return values


def input_records(input_dir: Path, names: list[str]) -> dict:
    """sha256 and size of the input files a stage read (the lineage of what it writes)."""
    return {name: {"bytes": (input_dir / name).stat().st_size, "sha256": sha256_file(input_dir / name)}
            for name in names if (input_dir / name).is_file()}


def tables_of(lineage: dict) -> tuple[str, ...]:
    """The tables the subsample stage wrote and every later stage carries: the splits, plus the
    independent vanilla train table when ``vanilla_draw`` is ``independent``."""
    draw = ((lineage.get("subsample") or {}).get("params") or {}).get("vanilla_draw", "coupled")
    return SPLITS + ((VANILLA_TRAIN,) if draw == "independent" else ())


def require_stage(task: Task, stage: str, path: Path) -> None:
    """Refuse a stage the task does not reach yet (Task.built_through), naming the file that says its task."""
    if not task.builds(stage):
        raise StageError(f"{path}: holds {task.name} {task.noun}s, which `hrm {stage}` does not take yet (the task "
                         f"reaches the {task.built_through} stage so far: docs/tasks.md); nothing was written")


def lineage_task(lineage: dict) -> Task:
    """The task of the tables a lineage describes (``raw.task``, hrm.tasks.recorded_task); ValueError
    for a name no task has."""
    raw = lineage.get("raw")
    return recorded_task(raw.get("task") if isinstance(raw, dict) else None)


def rows_per_group(lineage: dict, split: str) -> int | None:
    """Rows per group of the table the last stage in ``lineage`` wrote (None if it does not say)."""
    per = (lineage.get("augment") or {}).get("rows_per_group", {}).get(split)
    if per is not None and split == "train" and (lineage.get("hints") or {}).get("params", {}).get("enabled"):
        per *= 2
    return per


# --------------------------------------------------------------------------- the subsample table


def read_subsample(path: Path, stage: str, task: Task, *, quiet: bool = False) -> pl.DataFrame:
    """A subsample table (raw columns + raw_index), validated by its task's raw schema; StageError
    naming file and rows."""
    from schemas.raw import raw_validator

    t0 = time.perf_counter()
    df = read_table(path)
    if "raw_index" not in df.columns:
        raise StageError(f"{path}: missing column raw_index; expected the output of `hrm subsample` "
                         f"(columns {', '.join(task.raw_columns)}, raw_index)")
    report = raw_validator(task)(df.drop("raw_index"), check_unique=False, path=str(path))
    problems = []
    if not report.ok:
        problems.append(report.message())
    index = df.get_column("raw_index")
    if not index.dtype.is_integer() or index.null_count() or (index.len() and index.min() < 0) or index.n_unique() != index.len():
        problems.append(f"{path}: raw_index must be distinct integers >= 0 (the rows of the raw file)")
    if report.ok and df.height and df.get_column("rating").cast(pl.Int64).max() > INT32_MAX:
        problems.append(f"{path}: ratings above {INT32_MAX} do not fit the examples table (Int32)")
    if not problems and df.height and index.max() > INT32_MAX:
        problems.append(f"{path}: raw_index above {INT32_MAX} does not fit the examples table (Int32)")
    if problems:
        raise StageError("\n".join(problems))
    if not quiet:
        log(stage, f"read {path}: {df.height:,} {task.noun}s, valid, "
                   f"{time.perf_counter() - t0:.1f} s")
    return df


# --------------------------------------------------------------------------- examples tables


def write_examples(df: pl.DataFrame, path: Path, stage: str, shown: Path, task: Task) -> dict:
    """Write a validated examples table; returns its lineage record (rows, sha256, checks id).

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
    return examples_record(path, df.height, task)


def examples_record(path: Path, rows: int, task: Task) -> dict:
    """The lineage record of an examples table a stage validated and wrote: its rows, sha256 and
    the id of the checks it passed (a record of what was done; the next stage validates again)."""
    from schemas.examples import checks_id

    return {"rows": rows, "sha256": sha256_file(path), "validated_with": checks_id(task)}


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


def check_table(df: pl.DataFrame, rows_per_group: int | None, shown: str, stage: str, *, built: bool,
                task: Task) -> None:
    """Validate an examples table by its task's schema; a failure is a StageError naming the file and rows."""
    from schemas.examples import validate_examples

    t0 = time.perf_counter()
    report = validate_examples(df, task, rows_per_group=rows_per_group, path=shown)
    if not report.ok:
        if built:  # our own output failed its schema: a bug, but still no half-written output
            raise StageError(f"internal error, the built table failed validation and nothing was written:\n"
                             f"{report.message()}")
        raise StageError(report.message())
    log(stage, f"validated {shown}: {df.height:,} rows, {time.perf_counter() - t0:.1f} s")


def read_examples(path: Path, rows_per_group: int | None, stage: str, task: Task) -> pl.DataFrame:
    """Read and validate an examples table, every row (whatever its lineage record says);
    StageError naming the file and rows."""
    df = read_examples_file(path, stage)
    check_table(df, rows_per_group, str(path), stage, built=False, task=task)
    return df


# --------------------------------------------------------------------------- memory, before the work

# Bytes of one examples-table row besides its two grids (inputs, labels: seq_len each): five Int32 ids and
# the rating, the variant, the source string's view, the transform (Sudoku: 29 bytes; a maze: 1).
# A 400,100-row Sudoku table is 90.5 MB on disk (Arrow IPC, uncompressed: its size in memory), 226 a row.
EXAMPLE_ROW_EXTRA = 66


def check_examples_memory(stage: str, rows: int, task: Task, shown: str, lower: list[str]) -> None:
    """Refuse (pipelines.io.check_memory) building an examples table of ``rows`` rows that will not fit:
    it counts the table twice (the library's arrays and the polars table built from them; a 400,100-row
    augment grew the process by 1.2 x the table)."""
    row = 2 * task.seq_len + EXAMPLE_ROW_EXTRA
    check_memory(stage, 2 * rows * row, shown, f"{rows:,} examples ({row} bytes each, twice)", lower)


def check_tables_memory(stage: str, paths: list[Path], copies: int, lower: list[str]) -> None:
    """Refuse (pipelines.io.check_memory) reading examples tables that will not fit: their bytes on disk
    (Arrow IPC, uncompressed: their size in memory) ``copies`` times (the tables read and what the stage
    builds from them)."""
    size = sum(p.stat().st_size for p in paths if p.is_file())
    check_memory(stage, copies * size, "", f"{human_bytes(size)} of input tables ({copies} copies)", lower)
