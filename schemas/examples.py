"""The content checks of the examples table (stages augment and hints) and of the shards.

The columns and their types are the task's (hrm.tasks) (``variant`` is a polars Enum in the
examples table, a string in the shards). Checked here, on every row: tokens in range,
labels a valid solution with the inputs' givens, ``group_id`` 0, 1, 2, ... in table order
with each group starting at its one original, ``puzzle_id`` the row number, and the
lineage: an original has the identity transform, an augmented example is its transform (a
valid symmetry) applied to its group's original, a hint keeps its parent's labels,
transform and givens and reveals at least one more (docs/reference-semantics.md §3).

The Sudoku checks are custom Pandera checks (polars back end) registered once; each
is vectorised over the whole table (numba kernels in hrm.build), and validation is
lazy: one run reports every failing row of every check. Rows are numbered from 0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pyarrow
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.extensions import register_check_method

from hrm import build
from hrm.sudoku import SEQ_LEN, Transforms
from hrm.tasks import SUDOKU, Task

VARIANTS = build.VARIANTS
VARIANT_DTYPE = pl.Enum(list(VARIANTS))
TOKEN_COLUMNS = ("inputs", "labels")
TRANSFORM_COLUMNS = ("digit_map", "transpose", "row_order", "col_order")
# The examples table's polars types: the shard columns, with ``variant`` as an Enum.
POLARS_SCHEMA = dict(pl.from_arrow(SUDOKU.shard_schema.empty_table()).schema) | {"variant": VARIANT_DTYPE}
# Identifies these checks in the lineage (``validated_with``: the checks a table passed when its
# stage wrote it). A record only: every stage validates its input tables again, since a lineage
# record can be edited along with its file. Give it a new value whenever a check of the examples
# table changes (tests/test_build.py holds a hash of the checks' code to catch a forgotten one).
# The value is the id the lineage of the datasets built so far records.
CHECKS_ID = "65988d6b24335974"
ROW_NUMBERING = "rows numbered from 0"
FAILURE_CASES_KEPT = 100  # Pandera keeps this many failure cases per check; counts are exact


# --------------------------------------------------------------------------- table <-> arrays


def _transform_series(values: np.ndarray, type_: pyarrow.DataType, n: int) -> pl.Series:
    """One transform column of ``n`` rows in the polars type of its shard type (uint8, bool, uint8[width])."""
    if pyarrow.types.is_fixed_size_list(type_):
        width = type_.list_size
        return pl.Series(np.ascontiguousarray(values, dtype=np.uint8).reshape(n, width), dtype=pl.Array(pl.UInt8, width))
    return pl.Series(values, dtype=pl.from_arrow(pyarrow.array([], type_)).dtype)


def to_frame(ex: build.Examples, sources: np.ndarray | pl.Series, ratings: np.ndarray,
             raw_index: np.ndarray, task: Task) -> pl.DataFrame:
    """The examples table of ``ex``; ``sources``/``ratings``/``raw_index`` are per group (original puzzle)."""
    group = pl.Series(ex.group_id, dtype=pl.UInt32)
    n = len(ex)

    def array(values: np.ndarray, width: int) -> pl.Series:
        return pl.Series(np.ascontiguousarray(values, dtype=np.uint8).reshape(n, width), dtype=pl.Array(pl.UInt8, width))

    tokens = task.seq_len
    values = task.transform_frame_columns(ex.transforms, n)
    transform = {name: _transform_series(values[name], type_, n) for name, type_, _ in task.transform_columns}
    return pl.DataFrame(
        {
            "group_id": pl.Series(ex.group_id, dtype=pl.Int32),
            "puzzle_id": pl.Series(ex.puzzle_id, dtype=pl.Int32),
            "variant": pl.Series(ex.variant, dtype=pl.UInt8).replace_strict(
                list(range(len(VARIANTS))), list(VARIANTS), return_dtype=VARIANT_DTYPE
            ),
            "parent_id": pl.Series(ex.parent_id, dtype=pl.Int32),
            "source": pl.Series(sources, dtype=pl.String).gather(group),
            "rating": pl.Series(np.asarray(ratings)[ex.group_id], dtype=pl.Int32),
            "raw_index": pl.Series(np.asarray(raw_index)[ex.group_id], dtype=pl.Int32),
            "inputs": array(ex.inputs, tokens),
            "labels": array(ex.labels, tokens),
            **transform,
        }
    )


def derived_frame(ex: build.Examples, table: pl.DataFrame, task: Task) -> pl.DataFrame:
    """The examples table of ``ex``, derived from the examples table ``table`` (same groups: their
    sources, ratings and raw rows are taken from ``table``'s originals)."""
    starts = np.flatnonzero(variant_codes(table.get_column("variant")) == build.ORIGINAL)  # one per group, in order
    return to_frame(ex, table.get_column("source").gather(starts), table.get_column("rating").to_numpy()[starts],
                    table.get_column("raw_index").to_numpy()[starts], task)


def _np(df: pl.DataFrame, name: str) -> np.ndarray:
    """A column as numpy (zero-copy for a single-chunk column without nulls)."""
    s = df.get_column(name)
    if s.n_chunks() > 1:
        s = s.rechunk()
    return s.to_numpy()


def variant_codes(s: pl.Series) -> np.ndarray:
    """uint8 codes into VARIANTS of an Enum or String variant column (255 = unknown)."""
    if s.dtype == VARIANT_DTYPE:
        return s.to_physical().fill_null(255).cast(pl.UInt8).to_numpy()
    return s.cast(pl.String).replace_strict(list(VARIANTS), list(range(len(VARIANTS))), default=255,
                                            return_dtype=pl.UInt8).to_numpy()


def from_frame(df: pl.DataFrame, task: Task) -> build.Examples:
    """The arrays of a (validated) examples table or shard table of ``task`` (its transform columns
    as ``transforms``: Task.transform_arrays)."""
    return build.Examples(
        group_id=_np(df, "group_id"),
        puzzle_id=_np(df, "puzzle_id"),
        variant=variant_codes(df.get_column("variant")),
        parent_id=_np(df, "parent_id"),
        inputs=_np(df, "inputs"),
        labels=_np(df, "labels"),
        transforms=task.transform_arrays({name: _np(df, name) for name in task.transform_names}),
    )


# --------------------------------------------------------------------------- check helpers


def _frame(data: PolarsData, columns: tuple[str, ...], types: dict = POLARS_SCHEMA) -> pl.DataFrame | None:
    """The columns a check reads, or None when one is missing, has another type than in ``types``
    or has nulls (the column checks report those; the content checks then stand aside)."""
    schema = data.lazyframe.collect_schema()
    for name in columns:
        if name not in schema:
            return None
        expected = types[name]
        if name == "variant":
            if schema[name] not in (VARIANT_DTYPE, pl.String):
                return None
        elif schema[name] != expected:
            return None
    df = data.lazyframe.select(columns).collect()
    if any(df.get_column(c).null_count() for c in columns):
        return None
    return df


def _result(name: str, passed: np.ndarray) -> pl.LazyFrame:
    return pl.LazyFrame({name: pl.Series(name, passed, dtype=pl.Boolean)})


def _column(data: PolarsData) -> np.ndarray | None:
    df = _frame(data, (data.key,))
    return None if df is None else _np(df, data.key)


def _original_rows(group_id: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """int64 [N]: row of the latest original at or before each row whose group is the
    row's group, else -1."""
    n = len(group_id)
    idx = np.where(variant == build.ORIGINAL, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    safe = np.maximum(idx, 0)
    return np.where((idx >= 0) & (group_id[safe] == group_id), idx, -1)


def _transforms(df: pl.DataFrame) -> Transforms:
    return Transforms(_np(df, "digit_map"), _np(df, "transpose"), _np(df, "row_order"), _np(df, "col_order"))


# --------------------------------------------------------------------------- registered checks


def _register(fn):
    try:
        return register_check_method(fn, statistics=list(getattr(fn, "_statistics", [])))
    except ValueError:  # already registered (module reloaded)
        return fn


def _stats(*names):
    def mark(fn):
        fn._statistics = names
        return fn

    return mark


@_register
@_stats("min_value", "max_value")
def examples_tokens_between(data: PolarsData, *, min_value: int, max_value: int):
    """Column check on an Array(UInt8) column: every value in [min_value, max_value]."""
    a = _column(data)
    if a is None:
        return True
    return _result(data.key, build.rows_in_range(a, min_value, max_value))


@_register
def examples_valid_solution(data: PolarsData):
    """``labels`` are tokens of a valid Sudoku solution. Checked on every non-hint row; a
    hint's labels are compared byte for byte with its parent's (examples_hint_matches_parent)."""
    df = _frame(data, ("variant", "labels"))
    if df is None:
        return True
    rows = np.flatnonzero(variant_codes(df.get_column("variant")) != build.HINT)
    passed = np.ones(df.height, dtype=bool)
    labels = _np(df, "labels")
    passed[rows] = build.valid_solution_tokens(labels if len(rows) == df.height else labels[rows])
    return _result("valid_solution", passed)


@_register
def examples_inputs_agree_with_labels(data: PolarsData):
    """Every given of the input (token != 1) equals the label in that cell."""
    df = _frame(data, TOKEN_COLUMNS)
    if df is None:
        return True
    return _result("inputs_agree_with_labels", build.inputs_agree(_np(df, "inputs"), _np(df, "labels")))


@_register
def examples_puzzle_id_is_row(data: PolarsData):
    """puzzle_id = row number: unique in the split and in emission order."""
    df = _frame(data, ("puzzle_id",))
    if df is None:
        return True
    return _result("puzzle_id_is_row", _np(df, "puzzle_id") == np.arange(df.height))


@_register
def examples_groups_in_order(data: PolarsData):
    """group_id starts at 0 and steps by 0 or 1 from row to row (groups contiguous, in order),
    and a row starts its group exactly when it is the group's original."""
    df = _frame(data, ("group_id", "variant"))
    if df is None:
        return True
    g = _np(df, "group_id").astype(np.int64)
    prev = np.concatenate([[-1], g[:-1]])
    step = g - prev
    starts = step == 1
    is_original = variant_codes(df.get_column("variant")) == build.ORIGINAL
    return _result("groups_in_order", ((step == 0) | starts) & (starts == is_original))


@_register
def examples_raw_index_distinct(data: PolarsData):
    """No two groups come from the same raw row: the originals' raw_index values are distinct (the
    subsample draws without replacement). Every later row of a group with the same raw row as its
    first is one of the lineage checks. A repeated raw row is reported at every original holding it."""
    df = _frame(data, ("variant", "raw_index"))
    if df is None:
        return True
    rows = np.flatnonzero(variant_codes(df.get_column("variant")) == build.ORIGINAL)
    values = _np(df, "raw_index")[rows]
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    passed = np.ones(df.height, dtype=bool)
    passed[rows] = counts[inverse] == 1
    return _result("raw_index_distinct", passed)


@_register
def examples_original_is_identity(data: PolarsData):
    """An original has the identity transform and no parent."""
    df = _frame(data, ("variant", "parent_id") + TRANSFORM_COLUMNS)
    if df is None:
        return True
    rows = np.flatnonzero(variant_codes(df.get_column("variant")) == build.ORIGINAL)
    t = _transforms(df)
    sub = Transforms(t.digit_map[rows], t.transpose[rows], t.row_order[rows], t.col_order[rows])
    passed = np.ones(df.height, dtype=bool)
    passed[rows] = build.is_identity(sub) & (_np(df, "parent_id")[rows] == build.NO_PARENT)
    return _result("original_is_identity", passed)


@_register
def examples_augmented_matches_original(data: PolarsData):
    """An augmented example has a valid symmetry as transform, no parent, the source, rating and
    raw row of its group's original, and its inputs and labels equal that transform applied to the
    original (every row is checked)."""
    cols = ("group_id", "variant", "parent_id", "source", "rating", "raw_index") + TOKEN_COLUMNS + TRANSFORM_COLUMNS
    df = _frame(data, cols)
    if df is None:
        return True
    variant = variant_codes(df.get_column("variant"))
    rows = np.flatnonzero(variant == build.AUGMENTED)
    passed = np.ones(df.height, dtype=bool)
    if len(rows) == 0:
        return _result("augmented_matches_original", passed)
    orig = _original_rows(_np(df, "group_id"), variant)[rows]
    has_orig = orig >= 0
    src = np.where(has_orig, orig, 0)
    t = _transforms(df)
    inputs, labels = _np(df, "inputs"), _np(df, "labels")
    ok = has_orig & (_np(df, "parent_id")[rows] == build.NO_PARENT)
    ok &= build.valid_symmetries(Transforms(t.digit_map[rows], t.transpose[rows], t.row_order[rows], t.col_order[rows]))
    ok &= build.transformed_equal(inputs, src, t, rows, inputs)
    ok &= build.transformed_equal(labels, src, t, rows, labels)
    ok &= _same_origin(df, rows, src)
    passed[rows] = ok
    return _result("augmented_matches_original", passed)


def _same_origin(df: pl.DataFrame, rows: np.ndarray, other: np.ndarray) -> np.ndarray:
    """bool [len(rows)]: same source, rating and raw row as row ``other``."""
    rating, raw_index = _np(df, "rating"), _np(df, "raw_index")
    ok = (rating[rows] == rating[other]) & (raw_index[rows] == raw_index[other])
    source = df.get_column("source")
    if source.n_unique() > 1:
        ok &= (source.gather(rows) == source.gather(other)).to_numpy()
    return ok


@_register
def examples_hint_matches_parent(data: PolarsData):
    """A hint's parent (parent_id, a row number) is an earlier non-hint row of the same group
    with the same labels, transform, source, rating and raw row; the hint keeps every given of the
    parent and has strictly more givens (a parent with at most one blank is copied unchanged)."""
    df = _frame(data, SUDOKU.columns)
    if df is None:
        return True
    ex = from_frame(df, SUDOKU)
    rows = np.flatnonzero(ex.variant == build.HINT)
    passed = np.ones(df.height, dtype=bool)
    if len(rows) == 0:
        return _result("hint_matches_parent", passed)
    parents = ex.parent_id[rows].astype(np.int64)
    ok = build.hints_match_parents(ex, rows, parents)
    ok &= _same_origin(df, rows, np.clip(parents, 0, df.height - 1))
    passed[rows] = ok
    return _result("hint_matches_parent", passed)


@_register
@_stats("expected")
def examples_rows_per_group(data: PolarsData, *, expected: int):
    """Every group has exactly ``expected`` rows (1 + num_aug, doubled with hints; 1 for test).
    A failing group is reported once, at its first row."""
    df = _frame(data, ("group_id",))
    if df is None:
        return True
    g = _np(df, "group_id")
    if len(g) == 0:
        return _result("rows_per_group", np.ones(0, dtype=bool))
    # Run lengths of equal consecutive ids (groups are contiguous; another check says if not).
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    lengths = np.diff(np.concatenate([starts, [len(g)]]))
    passed = np.ones(len(g), dtype=bool)
    passed[starts] = lengths == expected  # one failure per bad group, at its first row
    return _result("rows_per_group", passed)


# --------------------------------------------------------------------------- models


_NO_FAILURES = {"n_failure_cases": FAILURE_CASES_KEPT}


class ExamplesTable(pa.DataFrameModel):
    """The examples table: every row checked for encoding, Sudoku validity and lineage."""

    group_id: pl.Int32 = pa.Field(ge=0)
    puzzle_id: pl.Int32 = pa.Field(ge=0)
    variant: Annotated[pl.Enum, list(VARIANTS)]
    parent_id: pl.Int32 = pa.Field(ge=-1)
    source: pl.String = pa.Field(str_length={"min_value": 1})
    rating: pl.Int32 = pa.Field(ge=0)
    raw_index: pl.Int32 = pa.Field(ge=0)
    inputs: Annotated[pl.Array, pl.UInt8(), SEQ_LEN] = pa.Field(
        examples_tokens_between={"min_value": 1, "max_value": 10}, n_failure_cases=FAILURE_CASES_KEPT
    )
    labels: Annotated[pl.Array, pl.UInt8(), SEQ_LEN] = pa.Field(
        examples_tokens_between={"min_value": 2, "max_value": 10},
        examples_valid_solution=(),
        n_failure_cases=FAILURE_CASES_KEPT,
    )
    digit_map: Annotated[pl.Array, pl.UInt8(), 10]
    transpose: pl.Boolean
    row_order: Annotated[pl.Array, pl.UInt8(), 9]
    col_order: Annotated[pl.Array, pl.UInt8(), 9]

    class Config:
        name = "examples"
        strict = True
        ordered = True
        examples_inputs_agree_with_labels = _NO_FAILURES
        examples_puzzle_id_is_row = _NO_FAILURES
        examples_groups_in_order = _NO_FAILURES
        examples_raw_index_distinct = _NO_FAILURES
        examples_original_is_identity = _NO_FAILURES
        examples_augmented_matches_original = _NO_FAILURES
        examples_hint_matches_parent = _NO_FAILURES


class ShardTable(ExamplesTable):
    """One split of a sharded dataset, read back from its Arrow files: every rule of the
    examples table (encoding, Sudoku validity, lineage of every row), on the shard layout
    (``variant`` a plain string). A shard is checked by itself, not trusted because the table
    it was cut from passed (issue 14: what a file's record says can be edited with it).
    """

    variant: pl.String = pa.Field(isin=list(VARIANTS))

    class Config(ExamplesTable.Config):
        name = "shards"


# --------------------------------------------------------------------------- reports


_REASONS = {
    "examples_tokens_between": "{column}: a token outside {min_value}..{max_value}",
    "examples_valid_solution": "labels: not a valid Sudoku solution (a digit repeats in a row, column or box)",
    "examples_inputs_agree_with_labels": "inputs: a given differs from the label in that cell",
    "examples_puzzle_id_is_row": "puzzle_id: not the row number (ids must be unique and in emission order)",
    "examples_groups_in_order": "group_id/variant: groups must be contiguous, numbered 0, 1, 2, ... in order, "
                                "each starting with its one original",
    "examples_raw_index_distinct": "raw_index: two groups come from the same raw row",
    "examples_original_is_identity": "original with a non-identity transform or a parent",
    "examples_augmented_matches_original": "augmented example is not its transform (a valid symmetry) applied to "
                                           "its group's original",
    "examples_hint_matches_parent": "hint does not match its parent (same group, labels, transform, source, rating, raw_index; "
                                    "keeps the parent's givens and adds at least one)",
    "examples_rows_per_group": "the group starting here does not have {expected} rows",
}
_PROBLEMS_SCHEMA = {"row": pl.Int64, "check": pl.String, "reason": pl.String}


@dataclass
class ExamplesReport:
    """Outcome of validating one examples (or shard) table; never raised, see ``message()``."""

    n_rows: int
    problems: pl.DataFrame  # row, check, reason (at most FAILURE_CASES_KEPT rows per check)
    failing: dict  # check -> number of failing rows (exact)
    table_errors: list
    path: str | None = None
    n_invalid: int = 0  # rows failing at least one check
    columns: tuple = SUDOKU.columns  # the task's (hrm.tasks), named when the table does not have it

    @property
    def ok(self) -> bool:
        return not self.table_errors and not self.failing

    def message(self, limit: int = 20) -> str:
        name = self.path or "table"
        if self.ok:
            return f"{name}: OK, {self.n_rows:,} rows valid"
        lines = []
        if self.table_errors:
            lines.append(f"{name}: the table does not have the examples layout ({', '.join(self.columns)}):")
            lines += [f"  {e}" for e in self.table_errors]
        if self.failing:
            counts = ", ".join(f"{c} {n:,}" for c, n in self.failing.items())
            lines.append(f"{name}: {self.n_invalid:,} of {self.n_rows:,} rows invalid "
                         f"({ROW_NUMBERING}; failing rows per check: {counts}):")
            shown = self.problems.head(limit)
            lines += [f"  row {r}: {why}" for r, why in shown.select("row", "reason").iter_rows()]
            if self.problems.height > shown.height:
                lines.append(f"  ... and more ({sum(self.failing.values()):,} failures in all)")
        return "\n".join(lines)


def _table_error(err, columns: tuple) -> str:
    reason = getattr(err.reason_code, "name", str(err.reason_code))
    column = getattr(err.schema, "name", None)
    if reason == "COLUMN_NOT_IN_DATAFRAME":
        return f"missing column: {err.failure_cases}"
    if reason == "COLUMN_NOT_IN_SCHEMA":
        return f"unexpected column: {err.failure_cases}"
    if reason == "WRONG_DATATYPE":
        expected = str(err.check).removeprefix("dtype(").removesuffix(")").strip("'")
        return f"column {column} has type {err.failure_cases}, expected {expected}"
    if reason == "CHECK_ERROR":
        return f"check {getattr(err.check, 'name', err.check)} could not run: {err.failure_cases}"
    if reason == "COLUMN_NOT_ORDERED":
        return f"columns out of order ({err.failure_cases}); expected {', '.join(columns)}"
    return f"{column}: {err.check} failed ({err.failure_cases})"


def report_errors(exc: pa.errors.SchemaErrors, n_rows: int, path: str | None, reasons: dict,
                  columns: tuple) -> ExamplesReport:
    """The report of a lazy validation's errors: each failing row with its check's reason from
    ``reasons`` (keyed by check name; a task's own checks are prefixed ``examples_`` or ``maze_``)."""
    table_errors, failing, problems = [], {}, []
    any_bad = np.zeros(n_rows, dtype=bool)
    for err in exc.schema_errors:
        output = err.check_output
        if not isinstance(output, pl.DataFrame) or output.width == 0 or output.height != n_rows:
            table_errors.append(_table_error(err, columns))
            continue
        bad = np.flatnonzero(~output.get_column(output.columns[-1]).fill_null(False).to_numpy())
        if len(bad) == 0:
            continue
        any_bad[bad] = True
        check = err.check
        name = getattr(check, "name", None) or str(check)
        column = getattr(err.schema, "name", None)
        column = column if column in columns else None
        stats = dict(getattr(check, "statistics", None) or {})
        if name in reasons:
            reason = reasons[name].format(column=column, **stats)
            short = name.removeprefix("examples_").removeprefix("maze_")
        else:  # a built-in check (ge, isin, str_length, not_nullable ...)
            what = "missing value" if name == "not_nullable" else f"fails {getattr(check, 'error', None) or name}"
            reason = f"{column}: {what}" if column else what
            short = f"{column}: {'not_nullable' if name == 'not_nullable' else (getattr(check, 'error', None) or name)}"
        key = f"{column}: {short}" if name.endswith("_tokens_between") else short
        failing[key] = failing.get(key, 0) + len(bad)
        shown = bad[:FAILURE_CASES_KEPT]
        problems.append(pl.DataFrame({"row": shown.astype(np.int64), "check": [key] * len(shown),
                                      "reason": [reason] * len(shown)}, schema=_PROBLEMS_SCHEMA))
    frame = pl.concat(problems).sort("row", maintain_order=True) if problems else pl.DataFrame(schema=_PROBLEMS_SCHEMA)
    return ExamplesReport(n_rows, frame, failing, table_errors, path, int(any_bad.sum()), columns)


def checks_id(task: Task) -> str:
    """The id of a task's examples checks, which the lineage records (``CHECKS_ID`` for Sudoku)."""
    return _models(task)[3]


def _models(task: Task) -> tuple:
    """(examples model, shard model, reasons, checks id) of a task."""
    from schemas.examples_maze import MAZE_CHECKS_ID, MAZE_REASONS, MazeExamplesTable, MazeShardTable

    # Until the checks are the task's own (docs/architecture.md): the models of each task's checks.
    models = {"sudoku": (ExamplesTable, ShardTable, _REASONS, CHECKS_ID),
              "maze": (MazeExamplesTable, MazeShardTable, MAZE_REASONS, MAZE_CHECKS_ID)}
    try:
        return models[task.name]
    except KeyError:
        raise ValueError(f"no examples schema for task {task.name!r}: one of {', '.join(models)}") from None


def examples_schema(task: Task, rows_per_group: int | None = None, *, shards: bool = False) -> pa.DataFrameSchema:
    """The schema of a task's examples table (or of a shard split), optionally with the group size."""
    table, shard_table, _, _ = _models(task)
    schema = copy.deepcopy((shard_table if shards else table).to_schema())
    if rows_per_group is not None:
        schema.checks = [*schema.checks, pa.Check.examples_rows_per_group(expected=int(rows_per_group), **_NO_FAILURES)]
    return schema


def validate_examples(
    df: pl.DataFrame, task: Task, *, rows_per_group: int | None = None, path: str | None = None,
    shards: bool = False,
) -> ExamplesReport:
    """Validate lazily (every failing row of every check); never raises for bad data."""
    _, _, reasons, _ = _models(task)
    columns = task.columns
    try:
        examples_schema(task, rows_per_group, shards=shards).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return report_errors(exc, df.height, path, reasons, columns)
    return ExamplesReport(df.height, pl.DataFrame(schema=_PROBLEMS_SCHEMA), {}, [], path, columns=columns)


def validate_shards(tables: list, task: Task, *, rows_per_group: int | None = None,
                    path: str | None = None) -> ExamplesReport:
    """Validate one split's shards (pyarrow tables, in row order) read back together: the layout
    the loader relies on (the task's column types, ids, group order, sizes) and every rule of the
    task's examples table, on every row."""
    import pyarrow

    table = pyarrow.concat_tables(tables) if tables else task.shard_schema.empty_table()
    return validate_examples(pl.from_arrow(table, rechunk=False), task, rows_per_group=rows_per_group, path=path,
                             shards=True)
