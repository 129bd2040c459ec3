"""The content checks of a maze examples table and of maze shards (hrm.tasks ``MAZE``).

The same table as Sudoku's (schemas/examples.py: ids, groups, origin, Pandera on the polars
back end, lazy, every row) with the maze's own rules in place of Sudoku's:

- tokens: inputs 1..4 (wall, open, S, G), labels 1..5 (plus ``o``, the path);
- every row is a maze with its answer: one S and one G, the label keeps every wall, S and G and
  marks open cells only, and those cells form one simple S-G path as short as the BFS optimum
  (hrm.maze.verify_paths on inputs and labels). Uniqueness of the shortest path is the raw
  stage's check (on by default for the builtin and csv sources), not repeated here;
- an original has transform 0 (identity); an augmented example has a transform in 1..7, no two
  of its group alike, and equals that dihedral transform of its group's original, with its
  source, rating and raw row;
- no hints (mazes have none) and no parents.

The id and group checks are the Sudoku table's own registered checks (the columns are alike).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from hrm import build, maze
from hrm.tasks import MAZE
from schemas.examples import (
    FAILURE_CASES_KEPT, VARIANT_DTYPE, VARIANTS, _NO_FAILURES, _frame, _np, _original_rows, _register, _result,
    _same_origin, _stats, variant_codes,
)

# The maze table's polars types (``variant`` an Enum in the examples table, as Sudoku's).
MAZE_POLARS_SCHEMA = dict(pl.from_arrow(MAZE.shard_schema.empty_table()).schema) | {"variant": VARIANT_DTYPE}
# As schemas.examples.CHECKS_ID, for these checks: a new value whenever one changes
# (tests/test_examples_maze.py holds a hash of this file to catch a forgotten one).
MAZE_CHECKS_ID = "maze-4b1e0c2a9d73"
MAZE_VARIANTS = ("original", "augmented")


def _maze_frame(data: PolarsData, columns: tuple[str, ...]) -> pl.DataFrame | None:
    return _frame(data, columns, MAZE_POLARS_SCHEMA)


@_register
@_stats("min_value", "max_value")
def maze_tokens_between(data: PolarsData, *, min_value: int, max_value: int):
    """Column check on a 900-token column: every value in [min_value, max_value]."""
    df = _maze_frame(data, (data.key,))
    if df is None:
        return True
    return _result(data.key, build.rows_in_range(_np(df, data.key), min_value, max_value))


@_register
def maze_solved(data: PolarsData):
    """Every row's labels are its inputs with one shortest S-G path marked (hrm.maze.verify_paths)."""
    df = _maze_frame(data, ("inputs", "labels"))
    if df is None:
        return True
    return _result("solved", maze.verify_paths(_np(df, "inputs"), _np(df, "labels")))


@_register
def maze_no_hints(data: PolarsData):
    """variant is ``original`` or ``augmented``: mazes have no hint examples."""
    df = _maze_frame(data, ("variant",))
    if df is None:
        return True
    return _result("no_hints", np.isin(variant_codes(df.get_column("variant")), (build.ORIGINAL, build.AUGMENTED)))


@_register
def maze_original_is_identity(data: PolarsData):
    """An original has transform 0."""
    df = _maze_frame(data, ("variant", "dihedral"))
    if df is None:
        return True
    is_original = variant_codes(df.get_column("variant")) == build.ORIGINAL
    return _result("original_is_identity", ~is_original | (_np(df, "dihedral") == 0))


@_register
def maze_augmented_matches_original(data: PolarsData):
    """An augmented example has a transform in 1..7 that no other row of its group has, the source,
    rating and raw row of its group's original, and its inputs and labels equal that dihedral
    transform of the original's."""
    cols = ("group_id", "variant", "source", "rating", "raw_index", "inputs", "labels", "dihedral")
    df = _maze_frame(data, cols)
    if df is None:
        return True
    variant = variant_codes(df.get_column("variant"))
    rows = np.flatnonzero(variant == build.AUGMENTED)
    passed = np.ones(df.height, dtype=bool)
    if len(rows) == 0:
        return _result("augmented_matches_original", passed)
    group_id, k = _np(df, "group_id").astype(np.int64), _np(df, "dihedral")
    orig = _original_rows(group_id, variant)[rows]
    src = np.where(orig >= 0, orig, 0)
    kr = k[rows]
    ok = (orig >= 0) & (kr >= 1) & (kr <= 7)
    safe = np.where(ok, kr, 0)
    inputs, labels = _np(df, "inputs"), _np(df, "labels")
    ok &= (maze.dihedral(inputs[src], safe) == inputs[rows]).all(axis=1)
    ok &= (maze.dihedral(labels[src], safe) == labels[rows]).all(axis=1)
    ok &= _same_origin(df, rows, src)
    key = group_id * 8 + k  # one transform once per group
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    repeated = np.ones(df.height, dtype=bool)
    repeated[first[counts == 1]] = False
    ok &= ~repeated[rows]
    passed[rows] = ok
    return _result("augmented_matches_original", passed)


class MazeExamplesTable(pa.DataFrameModel):
    """The maze examples table: every row checked for encoding, a shortest path and lineage."""

    group_id: pl.Int32 = pa.Field(ge=0)
    puzzle_id: pl.Int32 = pa.Field(ge=0)
    variant: Annotated[pl.Enum, list(VARIANTS)] = pa.Field(maze_no_hints=(), n_failure_cases=FAILURE_CASES_KEPT)
    parent_id: pl.Int32 = pa.Field(eq=build.NO_PARENT)
    source: pl.String = pa.Field(str_length={"min_value": 1})
    rating: pl.Int32 = pa.Field(ge=0)
    raw_index: pl.Int32 = pa.Field(ge=0)
    inputs: Annotated[pl.Array, pl.UInt8(), maze.SEQ_LEN] = pa.Field(
        maze_tokens_between={"min_value": maze.WALL, "max_value": maze.GOAL}, n_failure_cases=FAILURE_CASES_KEPT
    )
    labels: Annotated[pl.Array, pl.UInt8(), maze.SEQ_LEN] = pa.Field(
        maze_tokens_between={"min_value": maze.WALL, "max_value": maze.PATH}, n_failure_cases=FAILURE_CASES_KEPT
    )
    dihedral: pl.UInt8 = pa.Field(le=7)

    class Config:
        name = "maze examples"
        strict = True
        ordered = True
        maze_solved = _NO_FAILURES
        examples_puzzle_id_is_row = _NO_FAILURES
        examples_groups_in_order = _NO_FAILURES
        examples_raw_index_distinct = _NO_FAILURES
        maze_original_is_identity = _NO_FAILURES
        maze_augmented_matches_original = _NO_FAILURES


class MazeShardTable(MazeExamplesTable):
    """One split of a sharded maze dataset read back from its Arrow files: every rule of the maze
    examples table, on the shard layout (``variant`` a plain string)."""

    variant: pl.String = pa.Field(isin=list(MAZE_VARIANTS))

    class Config(MazeExamplesTable.Config):
        name = "maze shards"


MAZE_REASONS = {
    "maze_tokens_between": "{column}: a token outside {min_value}..{max_value}",
    "maze_solved": "labels: not the input maze with one shortest S-G path marked (one S and one G; walls, S and G "
                   "kept; path marks on open cells forming one simple path as short as the BFS optimum)",
    "maze_no_hints": "variant: mazes have no hint examples",
    "examples_puzzle_id_is_row": "puzzle_id: not the row number (ids must be unique and in emission order)",
    "examples_groups_in_order": "group_id/variant: groups must be contiguous, numbered 0, 1, 2, ... in order, "
                                "each starting with its one original",
    "examples_raw_index_distinct": "raw_index: two groups come from the same raw row",
    "maze_original_is_identity": "original with a transform other than 0 (identity)",
    "maze_augmented_matches_original": "augmented maze is not its transform (1..7, once per group) applied to its "
                                       "group's original, with the original's source, rating and raw_index",
    "examples_rows_per_group": "the group starting here does not have {expected} rows",
}
