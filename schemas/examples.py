"""The content checks of the examples table (stages augment and hints) and of the shards, for every task.

The columns and their types are the task's (``task.column_specs``; ``variant`` is a polars Enum in
the examples table, a string in the shards). Checked here, on every row, for every task: tokens in the
task's ranges (``task.token_ranges``), ``puzzle_id`` the row number, ``group_id`` 0, 1, 2, ... in table
order with each group starting at its one original, the originals' raw rows distinct, the group size,
and the lineage: an original has the identity transform (``task.is_identity``), an augmented example
is its transform applied to its group's original with the original's source, rating and raw row
(``task.augmented_matches``), and, for a task with hints, a hint keeps its parent's labels, transform
and givens and reveals at least one more (``task.hints_match_parents``; docs/reference-semantics.md
§3). A task without hints has no parents (``parent_id`` -1). Then the task's own rules
(``task.examples_rules``: Sudoku's labels are a valid solution that agrees with the inputs, a maze's
labels one shortest path).

The schema is a Pandera ``DataFrameSchema`` (polars back end) built from the task (:func:`examples_schema`):
every check is a plain ``pa.Check`` (no registration, so a new task needs none), vectorised over the
whole table (numba kernels in hrm.build), and validation is lazy: one run reports every failing row of
every check. Rows are numbered from 0. ``task.examples_checks_id`` names these checks in the lineage.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import pyarrow
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from hrm import build
from hrm.tasks.base import ExamplesRule, Task

VARIANTS = build.VARIANTS
VARIANT_DTYPE = pl.Enum(list(VARIANTS))
ROW_NUMBERING = "rows numbered from 0"
FAILURE_CASES_KEPT = 100  # Pandera keeps this many failure cases per check; counts are exact


def polars_schema(task: Task) -> dict:
    """The examples table's polars types of a task: its shard columns, with ``variant`` as an Enum."""
    return dict(pl.from_arrow(task.shard_schema.empty_table()).schema) | {"variant": VARIANT_DTYPE}


# --------------------------------------------------------------------------- table <-> arrays


def _transform_series(values: np.ndarray, type_: pyarrow.DataType, n: int) -> pl.Series:
    """One transform column of ``n`` rows in the polars type of its shard type (uint8, bool, uint8[width])."""
    if pyarrow.types.is_fixed_size_list(type_):
        width = type_.list_size
        return pl.Series(np.ascontiguousarray(values, dtype=np.uint8).reshape(n, width), dtype=pl.Array(pl.UInt8, width))
    return pl.Series(values, dtype=pl.from_arrow(pyarrow.array([], type_)).dtype)


def to_frame(ex: build.Examples, sources: np.ndarray | pl.Series, ratings: np.ndarray,
             raw_index: np.ndarray, task: Task) -> pl.DataFrame:
    """The examples table of ``ex``; ``sources``/``ratings``/``raw_index`` are per row of the source table
    (a group's original puzzle, or for an example with an ``origin``, that row)."""
    origin = ex.group_id if ex.origin is None else ex.origin
    group = pl.Series(origin, dtype=pl.UInt32)
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
            "rating": pl.Series(np.asarray(ratings)[origin], dtype=pl.Int32),
            "raw_index": pl.Series(np.asarray(raw_index)[origin], dtype=pl.Int32),
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
    return s.cast(pl.String).replace_strict(list(build.SHARD_VARIANTS), list(range(len(build.SHARD_VARIANTS))),
                                            default=255, return_dtype=pl.UInt8).to_numpy()


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


def _frame(data: PolarsData, columns: tuple[str, ...], types: dict) -> pl.DataFrame | None:
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


def _original_rows(group_id: np.ndarray, variant: np.ndarray, raw_index: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """int64 [len(rows)]: for each of ``rows``, the original of its group made from the same raw row,
    else -1 (a group's one original for Sudoku and mazes; for ARC, the original pair of an augmented pair).
    A negative raw_index (its column check fails) is read as 0."""
    originals = np.flatnonzero(variant == build.ORIGINAL)
    raw = np.clip(raw_index.astype(np.int64), 0, None)
    key = group_id.astype(np.int64) * (int(raw.max(initial=0)) + 1) + raw  # one number per (group, raw row)
    order = np.argsort(key[originals], kind="stable")
    sorted_keys, wanted = key[originals][order], key[rows]
    at = np.searchsorted(sorted_keys, wanted)
    found = at < len(sorted_keys)
    found[found] = sorted_keys[at[found]] == wanted[found]
    out = np.full(len(rows), -1, dtype=np.int64)
    out[found] = originals[order][at[found]]
    return out


def _transforms(df: pl.DataFrame, task: Task, rows: np.ndarray | None = None):
    """The task's transforms (Task.transform_arrays) of the table's rows (``rows`` only, when given)."""
    columns = {name: _np(df, name) for name in task.transform_names}
    return task.transform_arrays(columns if rows is None else {k: v[rows] for k, v in columns.items()})


def _same_origin(df: pl.DataFrame, rows: np.ndarray, other: np.ndarray) -> np.ndarray:
    """bool [len(rows)]: same source, rating and raw row as row ``other``."""
    rating, raw_index = _np(df, "rating"), _np(df, "raw_index")
    ok = (rating[rows] == rating[other]) & (raw_index[rows] == raw_index[other])
    source = df.get_column("source")
    if source.n_unique() > 1:
        ok &= (source.gather(rows) == source.gather(other)).to_numpy()
    return ok


# --------------------------------------------------------------------------- the checks of every task
# Each takes the table (PolarsData) and its types, and returns one boolean column (True = the row passes),
# or True when a column it reads is missing or of another type (the column checks report those).


def _tokens_between(data: PolarsData, *, types: dict, min_value: int, max_value: int):
    """Column check on an Array(UInt8) column: every value in [min_value, max_value]."""
    df = _frame(data, (data.key,), types)
    if df is None:
        return True
    return _result(data.key, build.rows_in_range(_np(df, data.key), min_value, max_value))


def _puzzle_id_is_row(data: PolarsData, *, types: dict):
    """puzzle_id = row number: unique in the split and in emission order."""
    df = _frame(data, ("puzzle_id",), types)
    if df is None:
        return True
    return _result("puzzle_id_is_row", _np(df, "puzzle_id") == np.arange(df.height))


def _groups_in_order(data: PolarsData, *, types: dict, task: Task):
    """group_id starts at 0 and steps by 0 or 1 from row to row (groups contiguous, in order), and a
    row starts its group exactly when it is the group's original (a task with several originals per
    group, Task.originals_per_group: a group starts with its originals, which come before the rest). A group
    read from an upstream folder has no original: its rows are all ``imported`` (hrm.build.IMPORTED)."""
    df = _frame(data, ("group_id", "variant"), types)
    if df is None:
        return True
    g = _np(df, "group_id").astype(np.int64)
    prev = np.concatenate([[-1], g[:-1]])
    step = g - prev
    starts = step == 1
    codes = variant_codes(df.get_column("variant"))
    is_original = codes == build.ORIGINAL
    # An imported group (hrm upstream import) has no original: all its rows are imported, none else.
    imported = codes == build.IMPORTED
    first = np.maximum.accumulate(np.where(starts, np.arange(len(g)), 0))
    one_kind = imported == imported[first] if len(g) else imported
    if task.originals_per_group == "one":
        return _result("groups_in_order", ((step == 0) | starts) & ((starts == is_original) | imported) & one_kind)
    after_original = np.concatenate([[False], is_original[:-1]]) & (step == 0)
    return _result("groups_in_order", ((step == 0) | starts) & ((starts <= is_original) | imported)
                   & (is_original <= (starts | after_original)) & one_kind)


def _raw_index_distinct(data: PolarsData, *, types: dict):
    """No two groups come from the same raw row: the originals' raw_index values are distinct (the
    subsample draws without replacement). Every later row of a group with the same raw row as its
    first is one of the lineage checks. A repeated raw row is reported at every original holding it."""
    df = _frame(data, ("variant", "raw_index"), types)
    if df is None:
        return True
    rows = np.flatnonzero(variant_codes(df.get_column("variant")) == build.ORIGINAL)
    values = _np(df, "raw_index")[rows]
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    passed = np.ones(df.height, dtype=bool)
    passed[rows] = counts[inverse] == 1
    return _result("raw_index_distinct", passed)


def _parents(task: Task) -> tuple[str, ...]:
    """The parent column where a lineage check reads it: only a task with hints has parents (without,
    ``parent_id`` is -1 by its column check)."""
    return ("parent_id",) if task.has_hints else ()


def _original_is_identity(data: PolarsData, *, types: dict, task: Task):
    """An original has the identity transform (and no parent)."""
    df = _frame(data, ("variant",) + _parents(task) + task.transform_names, types)
    if df is None:
        return True
    rows = np.flatnonzero(variant_codes(df.get_column("variant")) == build.ORIGINAL)
    passed = np.ones(df.height, dtype=bool)
    ok = task.is_identity(_transforms(df, task, rows))
    if task.has_hints:
        ok &= _np(df, "parent_id")[rows] == build.NO_PARENT
    passed[rows] = ok
    return _result("original_is_identity", passed)


def _augmented_matches_original(data: PolarsData, *, types: dict, task: Task):
    """An augmented example has a transform an augmented copy may have (and no parent), the source,
    rating and raw row of its group's original, and its inputs and labels equal that transform applied
    to the original (every row is checked)."""
    cols = ("group_id", "variant") + _parents(task) + ("source", "rating", "raw_index", "inputs", "labels")
    df = _frame(data, cols + task.transform_names, types)
    if df is None:
        return True
    variant = variant_codes(df.get_column("variant"))
    rows = np.flatnonzero(variant == build.AUGMENTED)
    passed = np.ones(df.height, dtype=bool)
    if len(rows) == 0:
        return _result("augmented_matches_original", passed)
    group_id = _np(df, "group_id")
    orig = _original_rows(group_id, variant, _np(df, "raw_index"), rows)
    has_orig = orig >= 0
    src = np.where(has_orig, orig, 0)
    ok = has_orig
    if task.has_hints:
        ok &= _np(df, "parent_id")[rows] == build.NO_PARENT
    ok &= task.augmented_matches(group_id, _transforms(df, task), rows, src, _np(df, "inputs"), _np(df, "labels"))
    ok &= _same_origin(df, rows, src)
    passed[rows] = ok
    return _result("augmented_matches_original", passed)


def _hint_matches_parent(data: PolarsData, *, types: dict, task: Task):
    """A hint's parent (parent_id, a row number) is an earlier non-hint row of the same group
    with the same labels, transform, source, rating and raw row; the hint keeps every given of the
    parent and has strictly more givens (a parent with at most one blank is copied unchanged)."""
    df = _frame(data, task.columns, types)
    if df is None:
        return True
    ex = from_frame(df, task)
    rows = np.flatnonzero(ex.variant == build.HINT)
    passed = np.ones(df.height, dtype=bool)
    if len(rows) == 0:
        return _result("hint_matches_parent", passed)
    parents = ex.parent_id[rows].astype(np.int64)
    ok = task.hints_match_parents(ex, rows, parents)
    ok &= _same_origin(df, rows, np.clip(parents, 0, df.height - 1))
    passed[rows] = ok
    return _result("hint_matches_parent", passed)


def _rows_per_group(data: PolarsData, *, types: dict, expected: int):
    """Every group has exactly ``expected`` rows (1 + num_aug, doubled with hints; 1 for test).
    A failing group is reported once, at its first row."""
    df = _frame(data, ("group_id",), types)
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


def _task_rule(data: PolarsData, *, types: dict, rule: ExamplesRule, short: str):
    """One of the task's own rules (Task.examples_rules) over the columns it reads."""
    df = _frame(data, rule.reads, types)
    if df is None:
        return True
    columns = {c: variant_codes(df.get_column(c)) if c == "variant" else _np(df, c) for c in rule.reads}
    return _result(short, rule.passes(columns))


# --------------------------------------------------------------------------- the schema


def _check(fn: Callable, name: str, types: dict, bound: dict | None = None, **statistics) -> pa.Check:
    """A check of this module as Pandera runs it, named ``name`` (what a report and the lineage's
    checks id know it by), with ``bound`` arguments and the ``statistics`` a report names, keeping
    FAILURE_CASES_KEPT failure cases."""
    error = f"{name}({', '.join(f'{k}={v}' for k, v in statistics.items())})" if statistics else None
    return pa.Check(partial(fn, types=types, **(bound or {}), **statistics), name=name, error=error,
                    statistics=statistics, n_failure_cases=FAILURE_CASES_KEPT)


def _rule_check(task: Task, rule: ExamplesRule, types: dict) -> pa.Check:
    return _check(_task_rule, rule.name, types, {"rule": rule, "short": _short(task, rule.name)})


def _columns(task: Task, types: dict, shards: bool) -> dict[str, pa.Column]:
    prefix = task.examples_check_prefix
    rules = [r for r in task.examples_rules if r.column is not None and not (shards and r.examples_only)]

    def column(name: str, *checks: pa.Check) -> pa.Column:
        return pa.Column(types[name], [*checks, *(_rule_check(task, r, types) for r in rules if r.column == name)])

    def tokens(name: str) -> pa.Column:
        low, high = task.token_ranges[name]
        return column(name, _check(_tokens_between, f"{prefix}tokens_between", types, min_value=low, max_value=high))

    variants = list(VARIANTS) if task.has_hints else [v for v in VARIANTS if v != "hint"]
    variants += [build.IMPORTED_VARIANT] if shards else []  # imported rows live in shards only
    limits = task.transform_limits
    return {
        "group_id": column("group_id", pa.Check.ge(0)),
        "puzzle_id": column("puzzle_id", pa.Check.ge(0)),
        "variant": pa.Column(pl.String, pa.Check.isin(variants)) if shards else column("variant"),
        # Only a hint has a parent: without hints, every parent_id is NO_PARENT.
        "parent_id": column("parent_id", pa.Check.ge(build.NO_PARENT) if task.has_hints
                            else pa.Check.eq(build.NO_PARENT)),
        "source": column("source", pa.Check.str_length(min_value=1)),
        "rating": column("rating", pa.Check.ge(0)),
        "raw_index": column("raw_index", pa.Check.ge(0)),
        "inputs": tokens("inputs"),
        "labels": tokens("labels"),
        **{name: column(name, *([pa.Check.le(limits[name])] if name in limits else []))
           for name in task.transform_names},
    }


def _short(task: Task, name: str) -> str:
    """A check's name as reports print it."""
    return name.removeprefix("examples_").removeprefix(task.examples_check_prefix)


def examples_schema(task: Task, rows_per_group: int | None = None, *, shards: bool = False) -> pa.DataFrameSchema:
    """The schema of a task's examples table (or of a shard split), optionally with the group size."""
    types = polars_schema(task)
    prefix = task.examples_check_prefix
    rules = [r for r in task.examples_rules if r.column is None and not (shards and r.examples_only)]
    checks = [
        *(_rule_check(task, r, types) for r in rules),
        _check(_puzzle_id_is_row, "examples_puzzle_id_is_row", types),
        _check(_groups_in_order, "examples_groups_in_order", types, {"task": task}),
        _check(_raw_index_distinct, "examples_raw_index_distinct", types),
        _check(_original_is_identity, f"{prefix}original_is_identity", types, {"task": task}),
        _check(_augmented_matches_original, f"{prefix}augmented_matches_original", types, {"task": task}),
    ]
    if task.has_hints:
        checks.append(_check(_hint_matches_parent, f"{prefix}hint_matches_parent", types, {"task": task}))
    if rows_per_group is not None:
        checks.append(_check(_rows_per_group, "examples_rows_per_group", types, expected=int(rows_per_group)))
    return pa.DataFrameSchema(_columns(task, types, shards), checks=checks, strict=True, ordered=True,
                              name=task.examples_schema_names[1 if shards else 0])


# --------------------------------------------------------------------------- reports


def _reasons(task: Task) -> dict[str, str]:
    """The report's reason of a failing row, by check name."""
    prefix = task.examples_check_prefix
    lineage = {f"{prefix}{short}": why for short, why in task.lineage_reasons.items()}
    return {
        f"{prefix}tokens_between": "{column}: a token outside {min_value}..{max_value}",
        **{rule.name: rule.reason for rule in task.examples_rules},
        "examples_puzzle_id_is_row": "puzzle_id: not the row number (ids must be unique and in emission order)",
        "examples_groups_in_order": "group_id/variant: groups must be contiguous, numbered 0, 1, 2, ... in order, "
                                    + ("each starting with its one original" if task.originals_per_group == "one"
                                       else "each starting with its originals"),
        "examples_raw_index_distinct": "raw_index: two groups come from the same raw row",
        **lineage,
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
    columns: tuple = ()  # the task's (Task.columns), named when the table does not have it

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
                  columns: tuple, task: Task) -> ExamplesReport:
    """The report of a lazy validation's errors: each failing row with its check's reason from
    ``reasons`` (keyed by check name; printed without its prefix, ``examples_`` or the task's)."""
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
            short = _short(task, name)
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
    """The id of a task's examples checks, which the lineage records (``task.examples_checks_id``)."""
    return task.examples_checks_id


def validate_examples(
    df: pl.DataFrame, task: Task, *, rows_per_group: int | None = None, path: str | None = None,
    shards: bool = False,
) -> ExamplesReport:
    """Validate lazily (every failing row of every check); never raises for bad data."""
    columns = task.columns
    try:
        examples_schema(task, rows_per_group, shards=shards).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return report_errors(exc, df.height, path, _reasons(task), columns, task)
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
