"""Schema of the raw table: one example per row, in the columns Sudoku-Extreme ships, for every task.

Columns (exactly these, in any order):

| column     | type   | rule |
| ---------- | ------ | ---- |
| `source`   | str    | not empty |
| `question` | str    | ``task.seq_len`` characters of the task's question class (``task.question_chars``) |
| `answer`   | str    | ``task.seq_len`` characters of its answer class |
| `rating`   | int64  | >= 0 |

plus the task's own columns (``task.raw_extra_columns``: ARC's puzzle, subset, kind and pair) and row
rules (``task.raw_rules``: Sudoku's answer is a solution that keeps the givens, the maze's answer a
shortest S-G path, ARC's grids rectangular; optional, on by default: the question has one answer). An
ARC grid is text of 1..30 rows of 1..30 colour digits joined by ``|`` (``task.text_lengths``).

The schema is a Pandera ``DataFrameSchema`` on the polars back end, built from the task
(:func:`raw_schema`): the task's rules are plain checks named after the rules, so a new task needs no
registration. They read a :class:`hrm.tasks.RawDiagnosis` that :func:`validate_raw` computes once per
table (``task.diagnose_raw``, the strings parsed once, in chunks), so adding a rule never adds a pass
over the rows. Used on its own (``raw_schema(task).validate(df)``) each check computes what it needs.

Rows are numbered from 0: row 0 is the first data row (in a CSV file, the line
after the header). Every message says so.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from functools import partial
from typing import Sequence

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.config import ValidationDepth, config_context

from hrm.tasks.base import RAW_SHARED_COLUMNS, RawColumn, RawDiagnosis, RawRule, Task

RAW_COLUMNS: tuple[str, ...] = RAW_SHARED_COLUMNS  # a task's raw columns start with these (Task.raw_columns)
ROW_NUMBERING = "rows numbered from 0 = first data row, header not counted"

# The task's rules run over this many rows at a time, bounding memory on 3.8 M-row tables.
CHUNK_ROWS = 32_768


# --------------------------------------------------------------------------- diagnosis


def well_formed(strings: pl.Series, pattern: str) -> np.ndarray:
    """bool [N]: the string matches ``pattern`` (False for nulls and for a column that is not text)."""
    if strings.dtype != pl.String:
        return np.zeros(len(strings), dtype=bool)
    return strings.str.contains(pattern).fill_null(False).to_numpy().astype(bool, copy=False)


def diagnose(questions: pl.Series, answers: pl.Series, task: Task, *, check_unique: bool = True,
             chunk_rows: int = CHUNK_ROWS) -> RawDiagnosis:
    """The task's raw rules over both columns (``task.diagnose_raw``), ``chunk_rows`` rows at a time."""
    n = len(questions)
    if len(answers) != n:
        raise ValueError(f"{n} questions but {len(answers)} answers")
    q_ok = well_formed(questions, task.question_pattern)
    a_ok = well_formed(answers, task.answer_pattern)
    parts = []
    for start in range(0, max(n, 1), chunk_rows):
        stop = min(start + chunk_rows, n)
        q = questions.slice(start, stop - start).to_numpy()
        a = answers.slice(start, stop - start).to_numpy()
        parts.append(task.diagnose_raw(np.asarray(q, dtype=object), np.asarray(a, dtype=object), q_ok[start:stop],
                                       a_ok[start:stop], check_unique))
    return parts[0] if len(parts) == 1 else RawDiagnosis.concat(parts)


# The diagnosis of the table being validated (its task, the diagnosis, whether uniqueness was checked), set
# by validate_raw for the duration of one Pandera run so that the rules' checks share it.
_CURRENT: contextvars.ContextVar[tuple[Task, RawDiagnosis, bool] | None] = contextvars.ContextVar(
    "raw_diagnosis", default=None
)


def _diagnosis_for(data: PolarsData, task: Task, *, need_unique: bool) -> RawDiagnosis:
    current = _CURRENT.get()
    height = data.lazyframe.select(pl.len()).collect().item()
    if current is not None:
        of, diag, checked_unique = current
        # By name: Pandera hands a column's checks a deep copy of the task.
        if of.name == task.name and len(diag) == height and (checked_unique or not need_unique):
            return diag
    frame = data.lazyframe.select("question", "answer").collect()
    return diagnose(frame["question"], frame["answer"], task, check_unique=need_unique)


def check_output(name: str, passed: np.ndarray) -> pl.LazyFrame:
    """What a check returns: one boolean column ``name`` (True = the row passes)."""
    return pl.LazyFrame({name: pl.Series(name, passed, dtype=pl.Boolean)})


def _rule_check(data: PolarsData, *, task: Task, rule: RawRule) -> pl.LazyFrame:
    """One rule of the task, as a Pandera check (True where the row passes)."""
    diag = _diagnosis_for(data, task, need_unique=rule.unique_only)
    return check_output(rule.column if rule.column_check else rule.name, diag.passed[rule.name])


# --------------------------------------------------------------------------- schema


def raw_schema(task: Task, check_unique: bool = True) -> pa.DataFrameSchema:
    """The raw table of ``task``: the four columns, their format, and the task's rules (the
    uniqueness rules only with ``check_unique``)."""
    rules = [rule for rule in task.raw_rules if check_unique or not rule.unique_only]

    def checks(column: str) -> list[pa.Check]:
        return [pa.Check(partial(_rule_check, task=task, rule=rule), name=rule.name)
                for rule in rules if rule.column_check and rule.column == column]

    def text(chars: str, column: str) -> pa.Column:
        length = pa.Check.str_length(*task.text_lengths)
        return pa.Column(str, [pa.Check.str_matches(rf"^{chars}*$"), length, *checks(column)])

    columns = {
        "source": pa.Column(str, pa.Check.str_length(min_value=1)),
        "question": text(task.question_chars, "question"),
        "answer": text(task.answer_chars, "answer"),
        "rating": pa.Column(pl.Int64, pa.Check.ge(0)),
        **{column.name: _extra_column(column) for column in task.raw_extra_columns},
    }
    frame_checks = [pa.Check(partial(_rule_check, task=task, rule=rule), name=rule.name)
                    for rule in rules if not rule.column_check]
    name = task.raw_schema_names[1 if check_unique else 0]
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=True, name=name)


def _extra_column(column: RawColumn) -> pa.Column:
    if column.integer:
        return pa.Column(pl.Int64, pa.Check.ge(column.ge))
    if column.values is not None:
        return pa.Column(str, pa.Check.isin(column.values))
    return pa.Column(str, pa.Check.str_length(min_value=1))


# --------------------------------------------------------------------------- report


PROBLEM_SCHEMA = {"row": pl.Int64, "column": pl.String, "reason": pl.String}


@dataclass
class RawReport:
    """Outcome of validating one raw table (or several batches of one file).

    ``valid``: the rows that passed, in the task's raw columns (``columns``: source, question, answer,
    rating (Int64), then the task's own).
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
    unique_means: str = ""  # what the uniqueness check asked, for the summary (Task.raw_unique_means)
    columns: tuple[str, ...] = RAW_COLUMNS  # the task's raw columns (Task.raw_columns)

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
                         f"({', '.join(self.columns)}):")
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
            columns=parts[0].columns,
        )


def raw_types(task: Task) -> dict[str, pl.DataType]:
    """The polars type of each raw column of ``task``, in order."""
    shared = {"source": pl.String, "question": pl.String, "answer": pl.String, "rating": pl.Int64}
    return {**shared, **{c.name: pl.Int64 if c.integer else pl.String for c in task.raw_extra_columns}}


def empty_raw_table(task: Task) -> pl.DataFrame:
    return pl.DataFrame(schema=raw_types(task))


def empty_rejected(task: Task) -> pl.DataFrame:
    return pl.DataFrame(schema={**raw_types(task), "row": pl.Int64, "reason": pl.String})


def empty_problems() -> pl.DataFrame:
    return pl.DataFrame(schema=PROBLEM_SCHEMA)


def normalise_raw(df: pl.DataFrame, task: Task) -> tuple[pl.DataFrame, list[str], pl.DataFrame]:
    """Check the column layout (``task.raw_columns``) and cast ``rating`` (and the task's integer
    columns) to Int64.

    Returns (frame, table errors, problems of ratings that are not integers).
    """
    errors: list[str] = []
    missing = [c for c in task.raw_columns if c not in df.columns]
    extra = [c for c in df.columns if c not in task.raw_columns]
    if missing:
        errors.append(f"missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    if extra:
        errors.append(f"unexpected column{'s' if len(extra) > 1 else ''}: {', '.join(extra)}")
    texts = ("source", "question", "answer", *(c.name for c in task.raw_extra_columns if not c.integer))
    for name in texts:
        if name in df.columns and df.schema[name] not in (pl.String, pl.Null):
            errors.append(f"column {name} has type {df.schema[name]}, expected text")
    for name in (c.name for c in task.raw_extra_columns if c.integer):
        if name in df.columns and not df.schema[name].is_integer():
            errors.append(f"column {name} has type {df.schema[name]}, expected integers")
        elif name in df.columns:
            df = df.with_columns(pl.col(name).cast(pl.Int64))
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
    for name in texts:
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
                  task: Task) -> RawReport:
    """The report of a table whose layout is wrong (normalise_raw's errors): the whole table is refused."""
    return RawReport(n_rows=n_rows, valid=empty_raw_table(task), rejected=empty_rejected(task),
                     problems=empty_problems(), table_errors=table_errors, path=path, checked_unique=checked_unique,
                     unique_means=task.raw_unique_means, columns=task.raw_columns)


def _reason(check: str, column: str, case, row: int, diag: RawDiagnosis, task: Task) -> str:
    """One line for a failure of ``check`` at ``row``."""
    if check == "not_nullable":
        return "missing value"
    if check.startswith("str_length"):
        if column not in ("question", "answer"):
            return "empty"
        lo, hi = task.text_lengths
        return f"expected {lo if lo == hi else f'{lo}..{hi}'} characters, got {len(str(case))}"
    if check.startswith("str_matches"):
        why = task.raw_character_reason(column, str(case))
        if why is not None:
            return why
    elif check.startswith("greater_than_or_equal_to"):
        return f"negative {column} {case}"
    elif check.startswith("isin"):
        return f"{case!r} is not one of {', '.join(next(c.values for c in task.raw_extra_columns if c.name == column))}"
    elif row in diag.reasons.get(check, {}):
        return diag.reasons[check][row]
    return f"{check} failed ({case})"


def _problems_of(failures: pl.DataFrame, diag: RawDiagnosis, task: Task) -> pl.DataFrame:
    """Pandera's failure cases about single rows as (row, column, reason) lines, each at the column
    its check reports (a task's rule: the rule's column)."""
    column_of = {rule.name: rule.column for rule in task.raw_rules}
    rows = failures.filter(pl.col("index").is_not_null())
    lines = [(int(i), column_of.get(check, col), _reason(check, col, case, int(i), diag, task))
             for i, col, check, case in rows.select("index", "column", "check", "failure_case").iter_rows()]
    return pl.DataFrame(lines, schema=PROBLEM_SCHEMA, orient="row")


def validate_raw(
    df: pl.DataFrame,
    task: Task,
    *,
    check_unique: bool = True,
    path: str | None = None,
    row_offset: int = 0,
    keep_valid: bool = True,
) -> RawReport:
    """Validate a raw table of ``task`` lazily: one run finds every bad row.

    Never raises for bad data; look at ``report.ok`` / ``report.message()``.
    ``row_offset`` is added to row numbers (for a file validated in batches).
    """
    n = df.height
    df, table_errors, problems = normalise_raw(df, task)
    if table_errors:
        return layout_report(n, table_errors, path=path, checked_unique=check_unique, task=task)
    df = df.select(task.raw_columns)
    diag = diagnose(df["question"], df["answer"], task, check_unique=check_unique)
    token = _CURRENT.set((task, diag, check_unique))
    try:
        # Data checks always run, whatever PANDERA_VALIDATION_* says in the environment.
        with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
            raw_schema(task, check_unique).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        table_errors += table_level_errors(exc.failure_cases)
        found = _problems_of(exc.failure_cases, diag, task)
        # A rating that is not an integer became null: report it once, as not an integer.
        found = found.join(problems.select("row", "column"), on=["row", "column"], how="anti")
        problems = pl.concat([problems, found])
    finally:
        _CURRENT.reset(token)
    return report_from_problems(df, problems, table_errors, path=path, row_offset=row_offset, keep_valid=keep_valid,
                                checked_unique=check_unique, task=task)


def report_from_problems(df: pl.DataFrame, problems: pl.DataFrame, table_errors: list[str], *, path: str | None,
                         row_offset: int, keep_valid: bool, checked_unique: bool, task: Task) -> RawReport:
    """The report of a table in the raw columns from its (row, column, reason) problems: the rows
    with none are valid, the others rejected with their reasons joined (shared by every task)."""
    order = {name: i for i, name in enumerate(task.raw_columns)}
    problems = (
        problems.with_columns(pl.col("column").replace_strict(order, default=len(order)).alias("_order"))
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
        rejected=rejected.select(*task.raw_columns, "row", "reason"),
        problems=problems,
        table_errors=table_errors,
        path=path,
        checked_unique=checked_unique,
        unique_means=task.raw_unique_means,
        columns=task.raw_columns,
    )


def raw_validator(task: Task):
    """The raw table's validator of a task: :func:`validate_raw` with ``task`` (the other arguments as
    :func:`validate_raw`'s)."""
    return partial(validate_raw, task=task)
