"""Schema of the raw maze table: one Maze-30x30-Hard maze per row, in the raw columns.

The official maze dataset (sapientinc/maze-30x30-hard-1k) ships the columns of Sudoku-Extreme;
its builder reads ``source``, the question, the answer and ``rating``. Here:

| column     | type   | rule |
| ---------- | ------ | ---- |
| `source`   | str    | not empty |
| `question` | str    | 900 characters (30 x 30, row-major) over `#` wall, space open, `S`, `G` |
| `answer`   | str    | 900 characters over the same and `o` (a cell of the path) |
| `rating`   | int64  | >= 0 |

plus the maze rules across columns, from :func:`hrm.maze.check_mazes`: the question holds
exactly one S and one G; the answer keeps every wall, S and G and marks open cells only, and
those cells with S and G form one simple 4-connected path from S to G; that path is as short
as the BFS optimum; and (optional, on by default) the shortest path is unique, so the label is
the only right answer. The rating is not checked against the path: what the official CSV's
rating counts could not be verified (hrm.maze's docstring).

As schemas/raw.py for Sudoku: a Pandera ``DataFrameModel`` on the polars back end whose maze
checks read a :class:`MazeDiagnosis` computed once per table; :func:`validate_maze_raw` returns
the same :class:`schemas.raw.RawReport`, naming every bad row (rows numbered from 0).
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.config import ValidationDepth, config_context

from hrm import maze
from schemas.raw import (
    CHUNK_ROWS, PROBLEM_SCHEMA, RAW_COLUMNS, RawReport, check_output, layout_report, normalise_raw, register_check,
    report_from_problems, table_level_errors, well_formed,
)

QUESTION_CHARS = "[# SG]"
ANSWER_CHARS = "[# SGo]"
QUESTION_PATTERN = rf"^{QUESTION_CHARS}{{{maze.SEQ_LEN}}}$"
ANSWER_PATTERN = rf"^{ANSWER_CHARS}{{{maze.SEQ_LEN}}}$"
UNIQUE_MEANS = "a unique shortest path each"
NOT_CHECKED = -1  # a row whose strings are malformed: the format checks report it


@dataclass(frozen=True)
class MazeDiagnosis:
    """The maze facts of every row of one table, computed once (chunked)."""

    question_ok: np.ndarray  # bool [N]: 900 characters over '# SG'
    answer_ok: np.ndarray  # bool [N]: 900 characters over '# SGo'
    code: np.ndarray  # int8 [N]: hrm.maze.check_mazes reason (0 valid), NOT_CHECKED where malformed
    shortest: np.ndarray  # int64 [N]: BFS moves S -> G on the question (-1: none, or not checked)
    path_moves: np.ndarray  # int64 [N]: the answer's marked cells + 1

    def __len__(self) -> int:
        return len(self.code)

    def passes(self, *codes: int) -> np.ndarray:
        """True where the row fails none of ``codes`` (malformed rows pass: reported elsewhere)."""
        return ~np.isin(self.code, codes)


def diagnose_mazes(questions: pl.Series, answers: pl.Series, *, chunk_rows: int = CHUNK_ROWS) -> MazeDiagnosis:
    """Parse both columns once and run every maze check, ``chunk_rows`` rows at a time."""
    n = len(questions)
    if len(answers) != n:
        raise ValueError(f"{n} questions but {len(answers)} answers")
    q_ok, a_ok = well_formed(questions, QUESTION_PATTERN), well_formed(answers, ANSWER_PATTERN)
    code = np.full(n, NOT_CHECKED, dtype=np.int8)
    shortest = np.full(n, -1, dtype=np.int64)
    path_moves = np.full(n, -1, dtype=np.int64)
    both = q_ok & a_ok
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        m = both[start:stop]
        if not m.any():
            continue
        keep = pl.Series(m)
        q = maze.strings_to_tokens(questions.slice(start, stop - start).filter(keep).to_numpy())
        a = maze.strings_to_tokens(answers.slice(start, stop - start).filter(keep).to_numpy())
        code[start:stop][m] = maze.check_mazes(q, a)
        shortest[start:stop][m] = maze.shortest_path_lengths(q)
        path_moves[start:stop][m] = (a == maze.PATH).sum(1) + 1
    return MazeDiagnosis(q_ok, a_ok, code, shortest, path_moves)


# The diagnosis of the table being validated, for the duration of one Pandera run.
_CURRENT: contextvars.ContextVar[MazeDiagnosis | None] = contextvars.ContextVar("raw_maze_diagnosis", default=None)


def _diagnosis_for(data: PolarsData) -> MazeDiagnosis:
    diag = _CURRENT.get()
    if diag is not None and len(diag) == data.lazyframe.select(pl.len()).collect().item():
        return diag
    frame = data.lazyframe.select("question", "answer").collect()
    return diagnose_mazes(frame["question"], frame["answer"])


@register_check
def maze_start_and_goal(data: PolarsData) -> pl.LazyFrame:
    """Frame check: the question holds exactly one S and one G."""
    return check_output("start_and_goal", _diagnosis_for(data).passes(maze.REASON_START_GOAL))


@register_check
def maze_answer_is_shortest_path(data: PolarsData) -> pl.LazyFrame:
    """Frame check: the answer marks one simple S-G path through open cells, as short as the BFS optimum."""
    return check_output("shortest_path", _diagnosis_for(data).passes(
        maze.REASON_ANSWER_MISMATCH, maze.REASON_NOT_A_PATH, maze.REASON_NOT_SHORTEST))


@register_check
def maze_unique_shortest_path(data: PolarsData) -> pl.LazyFrame:
    """Frame check: the question's shortest S-G path is unique."""
    return check_output("unique", _diagnosis_for(data).passes(maze.REASON_NOT_UNIQUE))


class RawMazeTable(pa.DataFrameModel):
    """The raw maze table without the uniqueness check."""

    source: str = pa.Field(str_length={"min_value": 1})
    question: str = pa.Field(str_length={"min_value": maze.SEQ_LEN, "max_value": maze.SEQ_LEN},
                             str_matches=rf"^{QUESTION_CHARS}*$")
    answer: str = pa.Field(str_length={"min_value": maze.SEQ_LEN, "max_value": maze.SEQ_LEN},
                           str_matches=rf"^{ANSWER_CHARS}*$")
    rating: pl.Int64 = pa.Field(ge=0)

    class Config:
        name = "raw maze"
        strict = True
        maze_start_and_goal = ()
        maze_answer_is_shortest_path = ()


class UniqueRawMazeTable(RawMazeTable):
    """The raw maze table, and every maze has a unique shortest path."""

    class Config:
        name = "raw maze (unique shortest paths)"
        maze_unique_shortest_path = ()


def raw_maze_schema(check_unique: bool = True) -> pa.DataFrameSchema:
    return (UniqueRawMazeTable if check_unique else RawMazeTable).to_schema()


_COLUMN_OF = {"maze_start_and_goal": "question", "maze_answer_is_shortest_path": "answer",
              "maze_unique_shortest_path": "question"}


def _reason(check: str, column: str, case, row: int, diag: MazeDiagnosis) -> str:
    """One line for a failure of ``check`` at ``row``."""
    if check == "not_nullable":
        return "missing value"
    if check.startswith("str_length"):
        return "empty" if column == "source" else f"expected {maze.SEQ_LEN} characters, got {len(str(case))}"
    if check.startswith("str_matches"):
        allowed = QUESTION_CHARS if column == "question" else ANSWER_CHARS
        bad = re.search(r"[^# SG]" if column == "question" else r"[^# SGo]", str(case))
        return (f"character {bad.group()!r} at position {bad.start()} (0-based) is not one of {allowed[1:-1]!r}"
                if bad else f"characters outside {allowed[1:-1]!r}")
    if check.startswith("greater_than_or_equal_to"):
        return f"negative rating {case}"
    if check in _COLUMN_OF:
        code = int(diag.code[row])
        why = maze.REASONS.get(code, check)
        if code == maze.REASON_NOT_SHORTEST:
            why += f" ({diag.path_moves[row]} moves, the shortest {diag.shortest[row]})"
        return why
    return f"{check} failed ({case})"


def validate_maze_raw(df: pl.DataFrame, *, check_unique: bool = True, path: str | None = None, row_offset: int = 0,
                      keep_valid: bool = True) -> RawReport:
    """Validate a raw maze table lazily: one run finds every bad row (never raises for bad data;
    see ``report.ok`` / ``report.message()``). As :func:`schemas.raw.validate_raw`."""
    n = df.height
    df, table_errors, problems = normalise_raw(df)
    if table_errors:
        return layout_report(n, table_errors, path=path, checked_unique=check_unique, unique_means=UNIQUE_MEANS)
    df = df.select(RAW_COLUMNS)
    diag = diagnose_mazes(df["question"], df["answer"])
    token = _CURRENT.set(diag)
    try:
        with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
            raw_maze_schema(check_unique).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        failures = exc.failure_cases
        table_errors += table_level_errors(failures)
        rows = failures.filter(pl.col("index").is_not_null())
        lines = [(int(i), _COLUMN_OF.get(check, col), _reason(check, col, case, int(i), diag))
                 for i, col, check, case in rows.select("index", "column", "check", "failure_case").iter_rows()]
        found = pl.DataFrame(lines, schema=PROBLEM_SCHEMA, orient="row")
        # A rating that is not an integer became null: report it once, as not an integer.
        found = found.join(problems.select("row", "column"), on=["row", "column"], how="anti")
        problems = pl.concat([problems, found])
    finally:
        _CURRENT.reset(token)
    return report_from_problems(df, problems, table_errors, path=path, row_offset=row_offset, keep_valid=keep_valid,
                                checked_unique=check_unique, unique_means=UNIQUE_MEANS)
