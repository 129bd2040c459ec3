"""Schema of the raw table: one Sudoku puzzle per row, as Sudoku-Extreme ships it.

Columns (exactly these, in any order):

| column     | type   | rule |
| ---------- | ------ | ---- |
| `source`   | str    | not empty |
| `question` | str    | 81 characters over `.` (blank) and `1`-`9` |
| `answer`   | str    | 81 digits `1`-`9` forming a valid Sudoku solution |
| `rating`   | int64  | >= 0 (tdoku backtracks) |

plus two rules across columns: the answer keeps every given of the question, and
(optional, on by default) the question has exactly one solution.

The checks are a Pandera ``DataFrameModel`` on the polars back end. The Sudoku
checks are custom checks registered with Pandera; they read a :class:`SudokuDiagnosis`
that :func:`validate_raw` computes once per table (strings parsed once, solutions
counted once), so adding a check never adds a pass over the grids. Used on its
own (``RawTable.validate(df)``) each check computes what it needs.

Rows are numbered from 0: row 0 is the first data row (in a CSV file, the line
after the header). Every message says so.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.config import ValidationDepth, config_context
from pandera.extensions import register_check_method

from hrm.sudoku import SEQ_LEN, agrees_with_givens, is_valid_solution, strings_to_grids

RAW_COLUMNS: tuple[str, ...] = ("source", "question", "answer", "rating")
QUESTION_CHARS = r"[.1-9]"
ANSWER_CHARS = r"[1-9]"
QUESTION_PATTERN = rf"^{QUESTION_CHARS}{{{SEQ_LEN}}}$"
ANSWER_PATTERN = rf"^{ANSWER_CHARS}{{{SEQ_LEN}}}$"
ROW_NUMBERING = "rows numbered from 0 = first data row, header not counted"

# Grid checks run over this many rows at a time, bounding memory on 3.8 M-row tables.
CHUNK_ROWS = 32_768


# --------------------------------------------------------------------------- diagnosis


@dataclass(frozen=True)
class SudokuDiagnosis:
    """The Sudoku facts of every row of one table, computed once (vectorised, chunked).

    A check whose inputs are malformed (wrong length, bad character, null) passes
    here: the format checks report those rows, the grid checks stay quiet.
    """

    question_ok: np.ndarray  # bool [N]: question is 81 characters over '.1-9'
    answer_ok: np.ndarray  # bool [N]: answer is 81 digits 1-9
    answer_is_solution: np.ndarray  # bool [N]: every row, column and box holds 1..9 once
    first_mismatch: np.ndarray  # int16 [N]: first cell where the answer changes a given, -1 if none
    num_solutions: np.ndarray | None  # int64 [N]: 0, 1 or 2 (= several); -1 where not counted

    def __len__(self) -> int:
        return len(self.question_ok)

    @property
    def matches_givens(self) -> np.ndarray:
        return self.first_mismatch < 0

    @property
    def unique(self) -> np.ndarray:
        if self.num_solutions is None:
            raise ValueError("solutions were not counted for this table")
        return (self.num_solutions == 1) | (self.num_solutions < 0)


def well_formed(strings: pl.Series, pattern: str) -> np.ndarray:
    """bool [N]: the string matches ``pattern`` (False for nulls and for a column that is not text)."""
    if strings.dtype != pl.String:
        return np.zeros(len(strings), dtype=bool)
    return strings.str.contains(pattern).fill_null(False).to_numpy().astype(bool, copy=False)


def _parse(strings: pl.Series, ok: np.ndarray) -> np.ndarray:
    """uint8 grids [len(strings), 81]; rows where ``ok`` is False stay all zero."""
    grids = np.zeros((len(strings), SEQ_LEN), dtype=np.uint8)
    if ok.any():
        grids[ok] = strings_to_grids(strings.filter(pl.Series(ok)).to_numpy())
    return grids


def diagnose(
    questions: pl.Series,
    answers: pl.Series,
    *,
    count_solutions: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> SudokuDiagnosis:
    """Parse both columns once and run every grid check, ``chunk_rows`` rows at a time."""
    n = len(questions)
    if len(answers) != n:
        raise ValueError(f"{n} questions but {len(answers)} answers")
    q_ok = well_formed(questions, QUESTION_PATTERN)
    a_ok = well_formed(answers, ANSWER_PATTERN)
    is_solution = np.ones(n, dtype=bool)
    first_mismatch = np.full(n, -1, dtype=np.int16)
    num_solutions = np.full(n, -1, dtype=np.int64) if count_solutions else None
    counter = None
    if count_solutions and q_ok.any():
        from hrm.solver import count_solutions as counter  # the solver is only needed here

    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        qm, am = q_ok[start:stop], a_ok[start:stop]
        if not (qm.any() or am.any()):
            continue
        q = _parse(questions.slice(start, stop - start), qm)
        a = _parse(answers.slice(start, stop - start), am)
        if am.any():
            is_solution[start:stop][am] = is_valid_solution(a[am])
        both = qm & am
        if both.any():
            agrees = agrees_with_givens(q[both], a[both])
            changed = (q[both] != 0) & (q[both] != a[both])
            first = np.where(agrees, -1, changed.argmax(axis=1))
            first_mismatch[start:stop][both] = first
        if counter is not None and qm.any():
            num_solutions[start:stop][qm] = np.asarray(counter(q[qm]), dtype=np.int64)
    return SudokuDiagnosis(q_ok, a_ok, is_solution, first_mismatch, num_solutions)


# The diagnosis of the table being validated, set by validate_raw for the duration of
# one Pandera run so that the registered checks share it instead of recomputing.
_CURRENT: contextvars.ContextVar[SudokuDiagnosis | None] = contextvars.ContextVar(
    "raw_sudoku_diagnosis", default=None
)


def _diagnosis_for(data: PolarsData, *, need_count: bool) -> SudokuDiagnosis:
    diag = _CURRENT.get()
    height = data.lazyframe.select(pl.len()).collect().item()
    if diag is not None and len(diag) == height and (diag.num_solutions is not None or not need_count):
        return diag
    frame = data.lazyframe.select("question", "answer").collect()
    return diagnose(frame["question"], frame["answer"], count_solutions=need_count)


def check_output(name: str, passed: np.ndarray) -> pl.LazyFrame:
    """What a registered check returns: one boolean column ``name`` (True = the row passes)."""
    return pl.LazyFrame({name: pl.Series(name, passed, dtype=pl.Boolean)})


# --------------------------------------------------------------------------- registered checks


def register_check(fn):
    """Register a custom check with Pandera (shared by the tasks' raw schemas)."""
    try:
        return register_check_method(fn)
    except ValueError:  # already registered (module imported twice, e.g. via reload)
        return fn


@register_check
def sudoku_answer_is_solution(data: PolarsData) -> pl.LazyFrame:
    """Column check on ``answer``: a complete grid obeying the row, column and box rules."""
    return check_output(data.key, _diagnosis_for(data, need_count=False).answer_is_solution)


@register_check
def sudoku_answer_matches_givens(data: PolarsData) -> pl.LazyFrame:
    """Frame check: the answer holds the question's digit in every given cell."""
    return check_output("matches_givens", _diagnosis_for(data, need_count=False).matches_givens)


@register_check
def sudoku_unique_solution(data: PolarsData) -> pl.LazyFrame:
    """Frame check: the question has exactly one solution (hrm.solver.count_solutions == 1)."""
    return check_output("unique", _diagnosis_for(data, need_count=True).unique)


# --------------------------------------------------------------------------- models


class RawTable(pa.DataFrameModel):
    """The raw table without the uniqueness check (for the 3.8 M-row hub file)."""

    source: str = pa.Field(str_length={"min_value": 1})
    question: str = pa.Field(
        str_length={"min_value": SEQ_LEN, "max_value": SEQ_LEN},
        str_matches=rf"^{QUESTION_CHARS}*$",
    )
    answer: str = pa.Field(
        str_length={"min_value": SEQ_LEN, "max_value": SEQ_LEN},
        str_matches=rf"^{ANSWER_CHARS}*$",
        sudoku_answer_is_solution=(),
    )
    rating: pl.Int64 = pa.Field(ge=0)

    class Config:
        name = "raw"
        strict = True
        sudoku_answer_matches_givens = ()


class UniqueRawTable(RawTable):
    """The raw table, and every question has exactly one solution."""

    class Config:
        name = "raw (unique solutions)"
        sudoku_unique_solution = ()


def raw_schema(check_unique: bool = True) -> pa.DataFrameSchema:
    return (UniqueRawTable if check_unique else RawTable).to_schema()


# --------------------------------------------------------------------------- report


PROBLEM_SCHEMA = {"row": pl.Int64, "column": pl.String, "reason": pl.String}
_COLUMN_ORDER = {name: i for i, name in enumerate(RAW_COLUMNS)}


@dataclass
class RawReport:
    """Outcome of validating one raw table (or several batches of one file).

    ``valid``: the rows that passed, columns ``source,question,answer,rating`` (rating Int64).
    ``rejected``: the other rows, same columns plus ``row`` (0-based data row) and ``reason``.
    ``problems``: one line per (row, column, reason); ``table_errors``: problems that are
    not about single rows (a missing column, a wrong type), which reject the whole table.
    """

    n_rows: int
    valid: pl.DataFrame
    rejected: pl.DataFrame
    problems: pl.DataFrame
    table_errors: list[str] = field(default_factory=list)
    path: str | None = None
    checked_unique: bool = True
    unique_means: str = "exactly one solution each"  # what the uniqueness check asked, for the summary

    @property
    def ok(self) -> bool:
        return not self.table_errors and self.problems.height == 0

    @property
    def n_rejected(self) -> int:
        return self.rejected.height

    def summary(self) -> str:
        name = self.path or "table"
        unique = self.unique_means if self.checked_unique else "uniqueness not checked"
        if self.ok:
            return f"{name}: OK, {self.n_rows:,} rows valid ({unique})"
        if self.table_errors:
            return f"{name}: the table is invalid ({len(self.table_errors)} table-level problems)"
        return f"{name}: {self.n_rejected:,} of {self.n_rows:,} rows invalid ({unique})"

    def message(self, limit: int = 20) -> str:
        """Multi-line report naming the file and each bad row (first ``limit`` lines)."""
        name = self.path or "table"
        if self.ok:
            return self.summary()
        lines: list[str] = []
        if self.table_errors:
            lines.append(f"{name}: the table does not have the raw layout "
                         f"({', '.join(RAW_COLUMNS)}):")
            lines += [f"  {e}" for e in self.table_errors]
        if self.problems.height:
            lines.append(f"{name}: {self.n_rejected:,} of {self.n_rows:,} rows are invalid "
                         f"({ROW_NUMBERING}):")
            shown = self.problems.head(limit)
            lines += [f"  row {r}, {c}: {why}" for r, c, why in shown.iter_rows()]
            more = self.problems.height - shown.height
            if more:
                lines.append(f"  ... and {more:,} more problems "
                             f"({self.problems.height:,} in {self.n_rejected:,} rows)")
        return "\n".join(lines)

    @staticmethod
    def merge(parts: Sequence["RawReport"], *, path: str | None = None, keep_valid: bool = True) -> "RawReport":
        """Concatenate the reports of consecutive batches (rows already offset)."""
        if not parts:
            raise ValueError("nothing to merge")
        return RawReport(
            n_rows=sum(p.n_rows for p in parts),
            valid=pl.concat([p.valid for p in parts]) if keep_valid else parts[0].valid.clear(),
            rejected=pl.concat([p.rejected for p in parts]),
            problems=pl.concat([p.problems for p in parts]),
            table_errors=list(dict.fromkeys(e for p in parts for e in p.table_errors)),
            path=path or parts[0].path,
            checked_unique=parts[0].checked_unique,
            unique_means=parts[0].unique_means,
        )


RAW_SCHEMA = {"source": pl.String, "question": pl.String, "answer": pl.String, "rating": pl.Int64}


def empty_raw_table() -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_SCHEMA)


def empty_rejected() -> pl.DataFrame:
    return pl.DataFrame(schema={**RAW_SCHEMA, "row": pl.Int64, "reason": pl.String})


def empty_problems() -> pl.DataFrame:
    return pl.DataFrame(schema=PROBLEM_SCHEMA)


def normalise_raw(df: pl.DataFrame) -> tuple[pl.DataFrame, list[str], pl.DataFrame]:
    """Check the column layout and cast ``rating`` to Int64.

    Returns (frame, table errors, problems of ratings that are not integers).
    """
    errors: list[str] = []
    missing = [c for c in RAW_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in RAW_COLUMNS]
    if missing:
        errors.append(f"missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    if extra:
        errors.append(f"unexpected column{'s' if len(extra) > 1 else ''}: {', '.join(extra)}")
    for name in ("source", "question", "answer"):
        if name in df.columns and df.schema[name] not in (pl.String, pl.Null):
            errors.append(f"column {name} has type {df.schema[name]}, expected text")
    bad_rating = empty_problems()
    if "rating" in df.columns:
        dtype = df.schema["rating"]
        if dtype in (pl.String, pl.Null):
            text = df["rating"].cast(pl.String).str.strip_chars()
            parsed = text.cast(pl.Int64, strict=False)
            bad = (parsed.is_null() & text.is_not_null() & (text != "")).to_numpy()
            rows = np.flatnonzero(bad)
            bad_rating = pl.DataFrame(
                {
                    "row": rows.astype(np.int64),
                    "column": ["rating"] * len(rows),
                    "reason": [f"not an integer: {v!r}" for v in text.gather(rows).to_list()],
                },
                schema=PROBLEM_SCHEMA,
            )
            df = df.with_columns(parsed.alias("rating"))
        elif dtype.is_integer():
            df = df.with_columns(pl.col("rating").cast(pl.Int64))
        else:
            errors.append(f"column rating has type {dtype}, expected integers")
    for name in ("source", "question", "answer"):
        if name in df.columns and df.schema[name] == pl.Null:
            df = df.with_columns(pl.col(name).cast(pl.String))
    return df, errors, bad_rating


def table_level_errors(failures: pl.DataFrame) -> list[str]:
    """The lines of Pandera's failure cases that are about no single row (a wrong type, say)."""
    return [
        f"{col}: {check} failed ({case})"
        for col, check, case in failures.filter(pl.col("index").is_null())
        .select("column", "check", "failure_case")
        .unique(maintain_order=True)
        .iter_rows()
    ]


def layout_report(n_rows: int, table_errors: list[str], *, path: str | None, checked_unique: bool,
                  unique_means: str = "exactly one solution each") -> RawReport:
    """The report of a table whose layout is wrong (normalise_raw's errors): the whole table is refused."""
    return RawReport(n_rows=n_rows, valid=empty_raw_table(), rejected=empty_rejected(), problems=empty_problems(),
                     table_errors=table_errors, path=path, checked_unique=checked_unique, unique_means=unique_means)


def _reasons_from_failures(failures: pl.DataFrame, df: pl.DataFrame, diag: SudokuDiagnosis) -> tuple[pl.DataFrame, list[str]]:
    """Turn Pandera's failure cases into (row, column, reason) lines and table-level errors."""
    table_errors = table_level_errors(failures)
    rows = failures.filter(pl.col("index").is_not_null()).with_columns(pl.col("index").cast(pl.Int64))
    check, case = pl.col("check"), pl.col("failure_case")
    length = case.str.len_chars()
    lines = rows.with_columns(
        pl.when(check == "not_nullable")
        .then(pl.lit("missing value"))
        .when(check.str.starts_with("str_length") & (pl.col("column") == "source"))
        .then(pl.lit("empty"))
        .when(check.str.starts_with("str_length"))
        .then(pl.format("expected {} characters, got {}", pl.lit(SEQ_LEN), length))
        .when(check.str.starts_with("str_matches") & (pl.col("column") == "question"))
        .then(pl.format("character '{}' at position {} (0-based) is not '.' or 1-9",
                        case.str.extract(r"([^.1-9])"), case.str.find(r"[^.1-9]")))
        .when(check.str.starts_with("str_matches"))
        .then(pl.format("character '{}' at position {} (0-based) is not a digit 1-9",
                        case.str.extract(r"([^1-9])"), case.str.find(r"[^1-9]")))
        .when(check.str.starts_with("greater_than_or_equal_to"))
        .then(pl.format("negative rating {}", case))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("reason")
    )
    # The Sudoku checks: describe each failure from the diagnosis.
    lines = lines.with_columns(
        pl.when(check == "sudoku_answer_is_solution").then(pl.lit("answer")).when(
            check == "sudoku_answer_matches_givens").then(pl.lit("answer")).when(
            check == "sudoku_unique_solution").then(pl.lit("question")).otherwise(pl.col("column")).alias("column")
    )
    idx = lines["index"].to_numpy()
    checks = lines["check"].to_list()
    reasons = lines["reason"].to_list()
    questions = df["question"]
    answers = df["answer"]
    for i, (name, row) in enumerate(zip(checks, idx)):
        if reasons[i] is not None:
            continue
        if name == "sudoku_answer_is_solution":
            reasons[i] = "not a valid Sudoku solution (a digit repeats in a row, column or box)"
        elif name == "sudoku_answer_matches_givens":
            cell = int(diag.first_mismatch[row])
            reasons[i] = (f"disagrees with the question's given at row {cell // 9 + 1}, column {cell % 9 + 1}"
                          f" (given {questions[int(row)][cell]}, answer {answers[int(row)][cell]})")
        elif name == "sudoku_unique_solution":
            count = int(diag.num_solutions[row]) if diag.num_solutions is not None else -1
            reasons[i] = "has no solution" if count == 0 else "has several solutions"
        else:
            reasons[i] = f"{name} failed ({lines['failure_case'][i]})"
    out = pl.DataFrame(
        {"row": lines["index"], "column": lines["column"], "reason": pl.Series(reasons, dtype=pl.String)},
        schema=PROBLEM_SCHEMA,
    )
    return out, table_errors


def validate_raw(
    df: pl.DataFrame,
    *,
    check_unique: bool = True,
    path: str | None = None,
    row_offset: int = 0,
    keep_valid: bool = True,
) -> RawReport:
    """Validate a raw table lazily: one run finds every bad row.

    Never raises for bad data; look at ``report.ok`` / ``report.message()``.
    ``row_offset`` is added to row numbers (for a file validated in batches).
    """
    n = df.height
    df, table_errors, problems = normalise_raw(df)
    if table_errors:
        return layout_report(n, table_errors, path=path, checked_unique=check_unique)
    df = df.select(RAW_COLUMNS)
    diag = diagnose(df["question"], df["answer"], count_solutions=check_unique)
    token = _CURRENT.set(diag)
    try:
        # Data checks always run, whatever PANDERA_VALIDATION_* says in the environment.
        with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
            raw_schema(check_unique).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        found, more_errors = _reasons_from_failures(exc.failure_cases, df, diag)
        # A rating that is not an integer became null: report it once, as not an integer.
        found = found.join(problems.select("row", "column"), on=["row", "column"], how="anti")
        problems = pl.concat([problems, found])
        table_errors += more_errors
    finally:
        _CURRENT.reset(token)

    return report_from_problems(df, problems, table_errors, path=path, row_offset=row_offset, keep_valid=keep_valid,
                                checked_unique=check_unique)


def report_from_problems(df: pl.DataFrame, problems: pl.DataFrame, table_errors: list[str], *, path: str | None,
                         row_offset: int, keep_valid: bool, checked_unique: bool,
                         unique_means: str = "exactly one solution each") -> RawReport:
    """The report of a table in the raw columns from its (row, column, reason) problems: the rows
    with none are valid, the others rejected with their reasons joined (shared by every task)."""
    problems = (
        problems.with_columns(pl.col("column").replace_strict(_COLUMN_ORDER, default=len(_COLUMN_ORDER)).alias("_order"))
        .unique(maintain_order=True)
        .sort("row", "_order", maintain_order=True)
        .drop("_order")
    )
    bad_rows = problems.group_by("row", maintain_order=True).agg(
        pl.format("{}: {}", pl.col("column"), pl.col("reason")).str.join("; ").alias("reason")
    )
    indexed = df.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    rejected = indexed.join(bad_rows, on="row", how="inner").sort("row")
    if table_errors or not keep_valid:
        valid = df.clear()
    else:
        valid = indexed.join(bad_rows, on="row", how="anti").drop("row")
    if row_offset:
        problems = problems.with_columns(pl.col("row") + row_offset)
        rejected = rejected.with_columns(pl.col("row") + row_offset)
    return RawReport(
        n_rows=df.height,
        valid=valid,
        rejected=rejected.select(*RAW_COLUMNS, "row", "reason"),
        problems=problems,
        table_errors=table_errors,
        path=path,
        checked_unique=checked_unique,
        unique_means=unique_means,
    )


def raw_validator(task):
    """The raw table's validator of a task (hrm.tasks.Task): :func:`validate_raw` for Sudoku,
    ``schemas.raw_maze.validate_maze_raw`` for mazes (same arguments, same report)."""
    from schemas.raw_maze import validate_maze_raw

    # Until the checks are the task's own (docs/architecture.md): each task's validator.
    validators = {"sudoku": validate_raw, "maze": validate_maze_raw}
    try:
        return validators[task.name]
    except KeyError:
        raise ValueError(f"no raw table schema for task {task.name!r}: one of {', '.join(validators)}") from None
