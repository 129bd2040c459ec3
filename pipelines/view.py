"""``hrm view``: one self-contained HTML page of what the pipeline wrote (docs/view.md).

Reads a run's outputs in the DVC layout (``--run data``: ``data/datasets``, ``data/evaluate``,
``data/analysis``; each folder can be named on its own) and writes ``--output FILE.html``, atomically:
inline CSS and JavaScript, the data embedded as JSON, no network at view time. Three sections:

    Datasets     each dataset's groups: the original beside its augmented versions and hint copies, with
                 the transform of each (the task's words, Task.describe_transform); filter by split, rating
                 and blanks
    Evaluation   evaluate/puzzles.parquet, one line per evaluated puzzle with every outcome it holds, a page of
                 rows at a time; filter solved / unsolved / solved only by the vote; a puzzle's every
                 (checkpoint, pass): exact, halted, verified, its first halting segment
    Traces       analysis/traces.parquet: for a traced puzzle, a slider (and the arrow keys) through its H
                 steps: the decoded board, cells changed since the previous step, wrong cells and cells that
                 break a rule of the task (Task.conflict_cells) marked, the halting Q and the residual per
                 step as a small chart, the critical step and convergence
                 class (analysis/puzzles.parquet); its multistability runs side by side, lettered by end answer

The dataset each table's ``row`` indexes is the one the table records (its Parquet metadata, pipelines/tables.py),
read only from bytes with the recorded sha256s: no run.json is needed.

Every board is drawn from the task's own description (Task.board_view): the page tests no task.
What is embedded is capped (``--max-groups``, ``--max-versions``, ``--max-puzzles``, ``--max-traced``; the view
stage takes them from params.yaml's ``view`` section), and the page says what it left out. A ``dvc plots show``
page beside the output (``plots/index.html``) is linked: the run's curves, drawn offline.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from hrm.integrity import IntegrityError, read_recorded
from pipelines.atomic_replace import atomic_output
from pipelines.io import Count, StageError, log
from pipelines.output_records import RECORD, read_record
from pipelines.settings import config_file_options
from pipelines.tables import DATASET_KEY, PASSES_KEY, dataset_record, table_metadata

STAGE = "view"
# The columns the page reads; a table without one is refused, naming the file and the column.
TRACE_COLUMNS = ("row", "step", "segment", "cycle", "segment_end", "prediction", "exact", "q_halt", "res_H", "res_L")
ANALYSIS_PUZZLE_COLUMNS = ("row", "exact", "critical_step", "convergence")
MULTISTABILITY_COLUMNS = ("row", "run", "kind", "param", "exact", "convergence", "answer")
# The evaluate tables' outcome of the headline method (the paper's vote of a passes task, the vote's top
# candidate of a votes task) and of the single pass it is compared with: the page's solved filters.
SOLVED_COLUMNS = ("paper_vote", "top_correct")
BASELINE_COLUMN = "baseline"
# evaluate's per-pass record (hrm.evaluate.results.EvalResult.pass_table), and the count the page derives from it.
PASS_COLUMNS = ("pass_correct", "pass_halted", "pass_verified", "pass_halt_segment")
EXACT_PASSES = "exact_passes"
# The run's folders (the DVC layout's names, the options') and the command whose output each is.
WRITERS = {"datasets": "shard", "evaluate": "evaluate", "analysis": "analyze"}
# What params.yaml's view section may set (the view stage's params): how much the page embeds.
CAPS = ("max_groups", "max_versions", "max_puzzles", "max_traced")
# `dvc plots show -o DIR/plots` beside the page (DIR: the page's folder) writes the run's curves, drawn offline
# (.dvc/plots/offline.html): the page links to it when it is there.
PLOTS_PAGE = "plots/index.html"
TOKEN_CHARS = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)  # a board: one char a token


@dataclasses.dataclass(frozen=True)
class ViewSettings:
    """What ``hrm view`` reads and how much of it the page embeds."""

    run: Path
    datasets: Path | None
    evaluate: Path | None
    analysis: Path | None
    output: Path
    max_groups: int = 40
    max_versions: int = 12
    max_puzzles: int = 10_000
    max_traced: int = 200


# --------------------------------------------------------------------------- small readers


def board_strings(tokens: np.ndarray) -> list[str]:
    """uint8 [N, L] tokens -> N strings, one character a token (base 36: every task's vocabulary fits)."""
    tokens = np.asarray(tokens, dtype=np.uint8)
    if tokens.size and int(tokens.max()) >= len(TOKEN_CHARS):
        raise StageError(f"a board holds token {int(tokens.max())}; the viewer draws tokens 0..{len(TOKEN_CHARS) - 1}")
    chars = TOKEN_CHARS[tokens]
    return [row.tobytes().decode() for row in chars]


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise StageError(f"{path}: not found; is {path.parent} a pipeline output?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StageError(f"{path}: not JSON ({e})") from None


def read_table(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    """A Parquet table of the pipeline, refused (naming the file and the column) when a column is missing."""
    if not path.is_file():
        raise StageError(f"{path}: not found; is {path.parent} a pipeline output?")
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as e:  # noqa: BLE001 - whatever the Parquet reader says of a bad file
        raise StageError(f"{path}: not a Parquet table ({e})") from None
    missing = [c for c in columns if c not in schema]
    if missing:
        raise StageError(f"{path}: no column {missing[0]!r} (the viewer reads {', '.join(columns)})")
    return finite(pl.read_parquet(path))


def finite(frame: pl.DataFrame) -> pl.DataFrame:
    """NaN and infinities as nulls: JSON has no such numbers (the page shows a dash)."""
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    return frame.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats)


def task_of(manifest: dict, path: Path):
    from hrm.tasks import manifest_task

    try:
        return manifest_task(manifest)
    except ValueError as e:
        raise StageError(f"{path}: {e}") from None


# --------------------------------------------------------------------------- datasets


def dataset_folders(folder: Path) -> list[Path]:
    """The dataset folders under ``folder``: itself (a manifest.json), or those datasets.json names (the shard
    stage's output root)."""
    if (folder / "manifest.json").is_file():
        return [folder]
    index = read_json(folder / "datasets.json") if (folder / "datasets.json").is_file() else None
    if not isinstance(index, dict) or not index:
        raise StageError(f"{folder}: not a dataset folder (no manifest.json, no datasets.json): pass the shard "
                         "stage's output (data/datasets) or one dataset in it")
    return [folder / name for name in dict.fromkeys(index.values()) if isinstance(name, str)]  # null: not built


def shard_tables(dataset: Path, manifest: dict, split: str, first_row: int, end_row: int) -> pa.Table:
    """Rows ``first_row`` .. ``end_row`` - 1 of a split, read from its Arrow shards (memory-mapped)."""
    parts = []
    for shard in manifest["splits"][split]["shards"]:
        lo, hi = shard["rows"]
        if hi <= first_row or lo >= end_row:
            continue
        table = verified_shard(dataset, split, shard)
        start = max(first_row, lo) - lo
        parts.append(table.slice(start, min(end_row, hi) - lo - start))
    return pa.concat_tables(parts) if parts else None


def verified_shard(dataset: Path, split: str, shard: dict) -> pa.Table:
    """A shard's table, read from bytes that have the sha256 its manifest lists (never from unverified ones)."""
    path = dataset / shard["file"]
    if not path.is_file():
        raise StageError(f"{path}: not found (its manifest {dataset / 'manifest.json'} lists it)")
    try:
        data = pa.py_buffer(read_recorded(path, shard.get("sha256"),
                                          f"{dataset / 'manifest.json'} (key splits.{split}.shards)"))
    except IntegrityError as e:
        raise StageError(str(e)) from None
    try:
        return pa.ipc.open_file(data).read_all()
    except pa.ArrowInvalid:
        pass
    try:
        return pa.ipc.open_stream(data).read_all()
    except pa.ArrowException as e:
        raise StageError(f"{path}: not an Arrow IPC file ({e})") from None


def split_rows(dataset: Path, manifest: dict, split: str, rows: np.ndarray) -> dict[int, tuple[str, str, str]]:
    """Split rows ``rows`` of a dataset: {row: (inputs, labels, decided)} as board strings (decided: "1" where
    the model decides the cell, the task's EvalRules.blank_cells)."""
    if len(rows) == 0:
        return {}
    task = task_of(manifest, dataset / "manifest.json")
    n = int(manifest["splits"][split]["rows"])
    if int(rows.max()) >= n:
        raise StageError(f"{dataset}: its {split} split has {n} rows, not row {int(rows.max())}: "
                         "the tables were not made from this dataset")
    table = shard_tables(dataset, manifest, split, int(rows.min()), int(rows.max()) + 1)
    local = pa.array(rows - int(rows.min()))
    width = task.seq_len
    inputs = table["inputs"].combine_chunks().take(local).flatten().to_numpy().reshape(-1, width)
    labels = table["labels"].combine_chunks().take(local).flatten().to_numpy().reshape(-1, width)
    decided = task.rules.blank_cells(inputs, labels).astype(np.uint8)
    return {int(r): b for r, b in zip(rows.tolist(), zip(board_strings(inputs), board_strings(labels),
                                                           board_strings(decided)))}


def dataset_groups(dataset: Path, manifest: dict, split: str, settings: ViewSettings) -> dict:
    """The first ``max_groups`` groups of a split, each its first ``max_versions`` rows (the original first)."""
    task = task_of(manifest, dataset / "manifest.json")
    info = manifest["splits"][split]
    shown = min(int(info["groups"]), settings.max_groups)
    ends = [s["rows"][1] for s in info["shards"] if s["groups"][0] < shown]
    table = shard_tables(dataset, manifest, split, 0, max(ends, default=0))
    groups: list[dict] = []
    if table is not None:
        frame = pl.from_arrow(table.filter(pc.less(table["group_id"], shown)))
        for (group,), rows in frame.group_by("group_id", maintain_order=True):
            groups.append(group_entry(task, int(group), rows, settings.max_versions))
    return {"groups_total": int(info["groups"]), "rows_total": int(info["rows"]),
            "rows_per_group": info.get("rows_per_group"), "groups": groups}


def group_entry(task, group: int, rows: pl.DataFrame, max_versions: int) -> dict:
    """One group for the page: its rating, its original's blanks, its first rows with their transforms."""
    width = task.seq_len
    inputs = rows["inputs"].to_numpy().reshape(-1, width)
    labels = rows["labels"].to_numpy().reshape(-1, width)
    decided = task.rules.blank_cells(inputs, labels)
    shown = rows.head(max_versions)
    versions = []
    for i, row in enumerate(shown.iter_rows(named=True)):
        transform = {name: row[name] for name in task.transform_names}
        versions.append({"variant": row["variant"], "puzzle_id": row["puzzle_id"], "parent_id": row["parent_id"],
                         "transform": task.describe_transform(transform)})
    boards = zip(board_strings(inputs[:max_versions]), board_strings(labels[:max_versions]),
                 board_strings(decided[:max_versions].astype(np.uint8)))
    for version, (inp, lab, dec) in zip(versions, boards):
        version.update(inputs=inp, labels=lab, decided=dec)
    return {"group": group, "rating": int(rows["rating"][0]), "blanks": int(decided[0].sum()),
            "rows": rows.height, "variants": rows["variant"].value_counts(sort=True).rows(), "versions": versions}


def datasets_section(folder: Path, settings: ViewSettings) -> tuple[list[dict], dict]:
    """Every dataset under ``folder``, each split's first groups; and the tasks' board descriptions."""
    section, views = [], {}
    for dataset in dataset_folders(folder):
        manifest = read_json(dataset / "manifest.json")
        if not isinstance(manifest.get("splits"), dict):
            raise StageError(f"{dataset / 'manifest.json'}: no 'splits': not a dataset the shard stage wrote")
        task = task_of(manifest, dataset / "manifest.json")
        views[task.name] = task.board_view().as_json()
        splits = {split: dataset_groups(dataset, manifest, split, settings) for split in manifest["splits"]}
        section.append({"name": dataset.name, "task": task.name, "noun": task.noun, "splits": splits})
    return section, views


# --------------------------------------------------------------------------- evaluation and analysis


def recorded_dataset(table: Path, datasets: Path | None) -> tuple[Path, dict, str]:
    """The dataset and split whose rows the per-puzzle table ``table`` indexes, as the table itself records them
    (its Parquet metadata, pipelines.tables.DATASET_KEY: name, split, manifest sha256): the folder of that name
    under ``datasets`` (or ``datasets`` itself when it is one dataset), else where the stage's run record says
    it read it; its manifest used only when its bytes have the recorded sha256. StageError naming the file."""
    record = dataset_record(table)
    name, split, want = record["name"], record["split"], record["manifest_sha256"]
    candidates = []
    if datasets is not None:
        candidates.append(datasets if (datasets / "manifest.json").is_file() else datasets / name)
    candidates += [c for c in run_record_datasets(table.parent) if c not in candidates]
    found = [c / "manifest.json" for c in candidates if (c / "manifest.json").is_file()]
    if not found:
        raise StageError(f"{table}: its dataset {name} (manifest sha256 {want}) is not under --datasets "
                         f"{datasets}; pass --datasets with the shard stage's output it was made from")
    refused = []
    for path in found:  # the first whose bytes are the recorded ones; json parses those very bytes
        try:
            manifest = json.loads(read_recorded(path, want, f"{table} (Parquet metadata {DATASET_KEY})"))
        except IntegrityError as e:
            refused.append(str(e))
            continue
        if split not in manifest.get("splits", {}):
            raise StageError(f"{path}: no {split!r} split, which {table} names")
        return path.parent, manifest, split
    raise StageError(f"{refused[0]}: not the dataset {table} was made from; pass --datasets with the shard stage's "
                     "output it was made from")


def run_record_datasets(folder: Path) -> list[Path]:
    """Where the stage's run.json (a vote evaluation's summary.json) says it read its dataset: a hint only, since
    no DVC stage declares run.json (the caller checks the manifest's sha256 against the table's record)."""
    out = []
    for name in ("run.json", "summary.json"):
        try:
            recorded = json.loads((folder / name).read_text()).get("dataset")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(recorded, str):
            out.append(Path(recorded))
    return out


def evaluation_section(folder: Path, settings: ViewSettings) -> tuple[dict, tuple]:
    """evaluate/puzzles.parquet: every scalar column of its first ``max_puzzles`` rows; and which rows' boards
    the page needs (dataset, manifest, split, rows)."""
    path = folder / "puzzles.parquet"
    table = read_table(path, ())
    dataset, manifest, split = recorded_dataset(path, settings.datasets)
    scalar = [c for c, t in table.schema.items() if t.is_numeric() or t in (pl.Boolean, pl.String)]
    passes = pass_outcomes(path, table.head(settings.max_puzzles))
    shown = table.head(settings.max_puzzles).select(scalar)
    if passes is not None:  # how many of its passes were exact: a column of the list, to sort and read at a glance
        shown = shown.with_columns(pl.Series(EXACT_PASSES, passes.pop("exact"), dtype=pl.Int32))
    solved = next((c for c in SOLVED_COLUMNS if c in scalar), None)
    rows = shown["row"].to_numpy() if "row" in scalar else np.zeros(0, np.int64)
    section = {"file": str(path), "dataset": dataset.name, "split": split, "task": task_of(manifest, dataset).name,
               "columns": shown.columns, "rows": [list(r) for r in shown.rows()], "total": table.height,
               "solved_column": solved, "baseline_column": BASELINE_COLUMN if BASELINE_COLUMN in scalar else None,
               "passes": passes, "summary": headline(folder)}
    return section, (dataset, manifest, split, rows)


def pass_outcomes(path: Path, table: pl.DataFrame) -> dict | None:
    """Each row's passes for the page (None: the table has no per-pass columns, e.g. a vote evaluation's): their
    layout (the table's PASSES_KEY metadata: checkpoint names, passes, perturbation, segments) and per row two
    strings of one base-36 character a pass (checkpoint k's pass p at k * P + p): its flags (1 exact, 2 halted at
    the last segment, 4 verified) and its first halting segment (0: none); and each row's exact passes."""
    from hrm.evaluate.results import unpack_passes

    if not all(c in table.columns for c in PASS_COLUMNS):
        return None
    layout = table_metadata(path, PASSES_KEY)
    if layout is None or not isinstance(layout.get("checkpoints"), list) or not isinstance(layout.get("passes"), int):
        raise StageError(f"{path}: per-pass columns without their layout (Parquet metadata {PASSES_KEY!r})")
    count = len(layout["checkpoints"]) * layout["passes"]
    bits = [unpack_passes(table[f"pass_{name}"].to_numpy().reshape(table.height, -1), count)
            for name in ("correct", "halted", "verified")]
    segments = table["pass_halt_segment"].to_numpy().reshape(table.height, -1)
    if segments.shape[1] != count or (segments.size and int(segments.max()) >= len(TOKEN_CHARS)):
        raise StageError(f"{path}: pass_halt_segment holds {segments.shape[1]} passes of segments up to "
                         f"{int(segments.max(initial=0))}; its metadata says {count} passes (the viewer draws up to "
                         f"{len(TOKEN_CHARS) - 1} segments)")
    flags = bits[0].astype(np.uint8) + 2 * bits[1].astype(np.uint8) + 4 * bits[2].astype(np.uint8)
    return {**layout, "flags": board_strings(flags), "halt": board_strings(segments), "exact": bits[0].sum(1)}


def headline(folder: Path) -> dict:
    """metrics.json's numbers, flattened (``a.b``: value) for the page's header of a section."""
    path = folder / "metrics.json"
    if not path.is_file():
        return {}
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float, bool)) or value is None:
            flat[prefix] = value

    walk("", read_json(path))
    return flat


def trace_steps(traces: pl.DataFrame, error_name: str, conflicts: ConflictMarks | None) -> dict[int, dict]:
    """traces.parquet per puzzle row: its steps, columnar (predictions as board strings; with ``conflicts``, each
    step's cells that break a rule of the task, as cell indices)."""
    traces = traces.sort(["row", "step"])
    tokens = np.stack(traces["prediction"].to_numpy()) if traces.height else np.zeros((0, 0), np.uint8)
    traces = traces.with_columns(pl.Series("board", board_strings(tokens), dtype=pl.String))
    keep = ["step", "segment", "cycle", "segment_end", "exact", "q_halt", "res_H", "res_L", error_name, "board"]
    if conflicts is not None and traces.height:
        # Not "conflicts": that is Sudoku's error measure, a column of the table.
        traces = traces.with_columns(pl.Series("conflict_cells", conflicts(traces["row"].to_numpy(), tokens)))
        keep.append("conflict_cells")
    out = {}
    for (row,), steps in traces.group_by("row", maintain_order=True):
        cols = steps.select(keep).to_dict(as_series=False)
        cols["error"] = cols.pop(error_name)
        out[int(row)] = cols
    return out


class ConflictMarks:
    """The cells of answers that break a rule of the task (Task.conflict_cells) in their puzzle's question, as
    lists of cell indices: what the page marks. None from :meth:`of` when the task has no such rule."""

    def __init__(self, task, questions: dict[int, tuple[str, str, str]]):
        self.task, self.questions = task, questions

    @classmethod
    def of(cls, task, questions: dict[int, tuple[str, str, str]]) -> "ConflictMarks | None":
        probe = np.zeros((1, task.seq_len), np.uint8)
        return cls(task, questions) if task.conflict_cells(probe, probe) is not None else None

    def __call__(self, rows: np.ndarray, answers: np.ndarray) -> list[list[int]]:
        questions = board_tokens([self.questions[int(r)][0] for r in rows])
        marked = self.task.conflict_cells(questions, np.asarray(answers, np.uint8))
        return [np.flatnonzero(m).tolist() for m in marked]


def board_tokens(boards: list[str]) -> np.ndarray:
    """Board strings (:func:`board_strings`) back to uint8 tokens [N, L]."""
    lookup = np.zeros(256, np.uint8)
    lookup[TOKEN_CHARS] = np.arange(len(TOKEN_CHARS), dtype=np.uint8)
    return lookup[np.frombuffer("".join(boards).encode(), np.uint8)].reshape(len(boards), -1)


def analysis_section(folder: Path, settings: ViewSettings) -> tuple[dict, tuple]:
    """The traced puzzles of analysis/ (the first ``max_traced`` of its puzzles.parquet), each with its steps
    and multistability runs, the cells that break the task's rules marked; and which rows' boards the page needs."""
    dataset, manifest, split = recorded_dataset(folder / "puzzles.parquet", settings.datasets)
    task = task_of(manifest, dataset)
    error_name = task.rules.error_name
    puzzles = read_table(folder / "puzzles.parquet", ANALYSIS_PUZZLE_COLUMNS)
    traces = read_table(folder / "traces.parquet", TRACE_COLUMNS + (error_name,))
    multi_path = folder / "multistability.parquet"
    multi = read_table(multi_path, MULTISTABILITY_COLUMNS) if multi_path.is_file() else None
    shown = puzzles.head(settings.max_traced)
    wanted = np.asarray(shown["row"].to_list(), dtype=np.int64)
    conflicts = ConflictMarks.of(task, split_rows(dataset, manifest, split, wanted))
    steps = trace_steps(traces.filter(pl.col("row").is_in(wanted)).select(TRACE_COLUMNS + (error_name,)), error_name,
                        conflicts)
    runs = multistability_runs(multi.filter(pl.col("row").is_in(wanted)) if multi is not None else None, conflicts)
    scalar = [c for c, t in shown.schema.items() if t.is_numeric() or t in (pl.Boolean, pl.String)]
    entries = []
    for record in shown.select(scalar).iter_rows(named=True):
        row = int(record["row"])
        record["runs"] = len(runs.get(row, []))  # its multistability runs
        entries.append({"facts": record, "steps": steps.get(row), "multistability": runs.get(row, [])})
    section = {"file": str(folder / "traces.parquet"), "dataset": dataset.name, "split": split, "task": task.name,
               "error_name": error_name, "puzzles": entries, "total": puzzles.height, "summary": headline(folder),
               "conflicts": conflicts is not None}
    return section, (dataset, manifest, split, wanted)


def multistability_runs(table: pl.DataFrame | None, conflicts: ConflictMarks | None) -> dict[int, list[dict]]:
    """multistability.parquet per puzzle row: its runs, each answer a board string (and its conflicting cells)."""
    if table is None or table.height == 0:
        return {}
    table = table.sort(["row", "run"])
    tokens = np.stack(table["answer"].to_numpy())
    marked = conflicts(table["row"].to_numpy(), tokens) if conflicts is not None else [None] * table.height
    out: dict[int, list[dict]] = {}
    for record, answer, cells in zip(table.select(MULTISTABILITY_COLUMNS[:-1]).iter_rows(named=True),
                                     board_strings(tokens), marked):
        out.setdefault(int(record.pop("row")), []).append({**record, "answer": answer, "conflict_cells": cells})
    return out


# --------------------------------------------------------------------------- the page


def section_folders(settings: ViewSettings) -> dict[str, Path]:
    """The folders to read: those named, and those of the run's DVC layout that exist; StageError for a named
    folder that is not there, or a run with none of them."""
    folders = {}
    for key, command in WRITERS.items():
        named = getattr(settings, key)
        if named is not None and not named.is_dir():
            raise StageError(f"{named}: not found (--{key})")
        folder = named if named is not None else settings.run / key
        if folder.is_dir():
            record = read_record(folder)  # None: no record (files copied by hand); read what is there
            if record is not None and record["command"] != command:
                raise StageError(f"{folder}: holds the output of `hrm {record['command']}` (its record {RECORD}), "
                                 f"not of `hrm {command}` (--{key})")
            folders[key] = folder
    if not folders:
        raise StageError(f"{settings.run}: not a pipeline output (no datasets/, evaluate/ or analysis/ in it); pass "
                         "--run with the folder the stages wrote into (data/), or --datasets, --evaluate, --analysis")
    return folders


def page_data(settings: ViewSettings) -> dict:
    """Everything the page embeds, read and checked before anything is written."""
    folders = section_folders(settings)
    if "datasets" in folders:
        settings = dataclasses.replace(settings, datasets=folders["datasets"])
    data: dict[str, Any] = {"run": str(settings.run), "folders": {k: str(v) for k, v in folders.items()},
                            "caps": dataclasses.asdict(settings) | {"run": None, "output": None},
                            "boards": {}, "views": {},
                            "plots_page": PLOTS_PAGE if (settings.output.parent / PLOTS_PAGE).is_file() else None}
    data["caps"] = {k: v for k, v in data["caps"].items() if k.startswith("max_")}
    needs = []
    if "datasets" in folders:
        data["datasets"], data["views"] = datasets_section(folders["datasets"], settings)
    if "evaluate" in folders:
        data["evaluation"], need = evaluation_section(folders["evaluate"], settings)
        needs.append(need)
    if "analysis" in folders:
        data["traces"], need = analysis_section(folders["analysis"], settings)
        needs.append(need)
    for dataset, manifest, split, rows in needs:
        task = task_of(manifest, dataset)
        data["views"].setdefault(task.name, task.board_view().as_json())
        boards = data["boards"].setdefault(f"{dataset.name}/{split}", {})
        todo = np.setdiff1d(rows, np.asarray([int(r) for r in boards], dtype=np.int64))
        boards.update({str(r): list(b) for r, b in split_rows(dataset, manifest, split, todo).items()})
    return data


def render(data: dict) -> str:
    """The page: the template with the data as JSON in a script element (``</`` escaped so no string in it
    can close the element)."""
    from pipelines.view_page import PAGE

    payload = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str).replace("</", "<\\/")
    return PAGE.replace("/*HRM_DATA*/", payload)


@click.command("view")
@click.option("--run", "run_dir", type=click.Path(path_type=Path, file_okay=False), default="data",
              help="The folder the stages wrote into (the DVC layout: datasets/, evaluate/, analysis/ under it).")
@click.option("--datasets", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The shard stage's output (or one dataset in it). [default: RUN/datasets]")
@click.option("--evaluate", "evaluate_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="An `hrm evaluate` output. [default: RUN/evaluate]")
@click.option("--analysis", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="An `hrm analyze` output. [default: RUN/analysis]")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The HTML file to write (replaced atomically).")
@click.option("--max-groups", type=Count(0), default=40, help="Groups shown per dataset split.")
@click.option("--max-versions", type=Count(1), default=12, help="Rows shown per group (the original first).")
@click.option("--max-puzzles", type=Count(0), default=10_000,
              help="Evaluated puzzles listed (a page of 500 drawn at a time; 10,000 embed about 4 MB).")
@click.option("--max-traced", type=Count(0), default=200, help="Traced puzzles embedded with their steps.")
@config_file_options("view", keys=CAPS)
def view(run_dir: Path, datasets: Path | None, evaluate_dir: Path | None, analysis: Path | None, output: Path,
         max_groups: int, max_versions: int, max_puzzles: int, max_traced: int) -> None:
    """One self-contained HTML page of a run: datasets, evaluation, reasoning traces (docs/view.md)."""
    settings = ViewSettings(run_dir, datasets, evaluate_dir, analysis, output, max_groups, max_versions,
                            max_puzzles, max_traced)
    start = time.perf_counter()
    page = render(page_data(settings))
    with atomic_output(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log(STAGE, f"wrote {output} ({len(page.encode()) / 1e6:.2f} MB) in {time.perf_counter() - start:.1f} s")
