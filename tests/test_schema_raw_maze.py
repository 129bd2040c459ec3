"""schemas/raw.py with the maze task: the raw maze table's Pandera schema names every bad row and why, on real
generated mazes and the hand-made ones of tests/test_maze.py (their paths known by construction)."""

from __future__ import annotations

import polars as pl
import pytest

from hrm import maze as M
from hrm.tasks import MAZE
from schemas.raw import raw_validator
from test_maze import RING, RING_DETOUR, RING_SHORT, TWIN, TWIN_TOP, U, U_THROUGH_WALL

validate_maze_raw = raw_validator(MAZE)

N = 8


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    g = M.generate_mazes(N, seed=3)
    return pl.DataFrame({"source": ["builtin"] * N, "question": M.tokens_to_strings(g.questions),
                         "answer": M.tokens_to_strings(g.answers), "rating": g.ratings})


def one(question, answer) -> pl.DataFrame:
    return pl.DataFrame({"source": ["hand"], "question": M.tokens_to_strings(question[None]),
                         "answer": M.tokens_to_strings(answer[None]), "rating": [0]})


def set_row(df: pl.DataFrame, row: int, **values) -> pl.DataFrame:
    return df.with_columns(*(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(v)).otherwise(pl.col(k)).alias(k)
                             for k, v in values.items()))


def test_generated_mazes_are_valid(table):
    report = validate_maze_raw(table, path="train.csv")
    assert report.ok and report.valid.equals(table), report.message()
    assert report.summary() == f"train.csv: OK, {N} rows valid (a unique shortest path each)"


def test_each_broken_rule_is_named_by_row(table):
    q, a = table["question"].to_list(), table["answer"].to_list()
    bad = set_row(table, 1, answer=a[1].replace("o", " ", 1))  # a gap in the path
    bad = set_row(bad, 2, question=q[2].replace("G", " "), answer=a[2].replace("G", " "))  # no goal
    wall = a[3].index("#")
    bad = set_row(bad, 3, answer=a[3][:wall] + "o" + a[3][wall + 1:])  # a wall marked as path
    bad = set_row(bad, 4, question=q[4][:-1])  # 899 characters
    bad = set_row(bad, 5, answer=a[5][:7] + "x" + a[5][8:])
    bad = set_row(bad, 6, source="", rating=-1)
    report = validate_maze_raw(bad, path="test.csv", row_offset=100)
    assert not report.ok and report.n_rejected == 6
    lines = {(r, c): why for r, c, why in report.problems.iter_rows()}
    assert lines[(101, "answer")] == M.REASONS[M.REASON_NOT_A_PATH]
    assert lines[(102, "question")] == M.REASONS[M.REASON_START_GOAL]
    assert lines[(103, "answer")] == M.REASONS[M.REASON_ANSWER_MISMATCH]
    assert lines[(104, "question")] == f"expected {M.SEQ_LEN} characters, got {M.SEQ_LEN - 1}"
    assert lines[(105, "answer")] == "character 'x' at position 7 (0-based) is not one of '# SGo'"
    assert lines[(106, "source")] == "empty" and lines[(106, "rating")] == "negative rating -1"
    assert sorted(report.rejected["row"].to_list()) == [101, 102, 103, 104, 105, 106]
    assert report.valid.height == 2 and report.valid.equals(table.gather([0, 7]))
    message = report.message()
    assert message.startswith("test.csv: 6 of 8 rows are invalid") and "row 103, answer:" in message


def test_a_longer_path_and_a_non_unique_shortest_path():
    assert validate_maze_raw(one(RING, RING_SHORT)).ok
    detour = validate_maze_raw(one(RING, RING_DETOUR))
    assert detour.problems.rows() == [(0, "answer", f"{M.REASONS[M.REASON_NOT_SHORTEST]} (20 moves, the shortest 4)")]
    wall = validate_maze_raw(one(U, U_THROUGH_WALL))
    assert wall.problems.rows() == [(0, "answer", M.REASONS[M.REASON_ANSWER_MISMATCH])]
    twin = validate_maze_raw(one(TWIN, TWIN_TOP))
    assert twin.problems.rows() == [(0, "question", M.REASONS[M.REASON_NOT_UNIQUE])]
    unchecked = validate_maze_raw(one(TWIN, TWIN_TOP), check_unique=False)
    assert unchecked.ok and unchecked.summary().endswith("(uniqueness not checked)")


def test_the_layout_is_checked_first(table):
    report = validate_maze_raw(table.drop("rating").with_columns(pl.lit(1).alias("difficulty")), path="t.csv")
    assert report.table_errors == ["missing column: rating", "unexpected column: difficulty"]
    assert "does not have the raw layout" in report.message() and report.valid.height == 0
    text = validate_maze_raw(table.with_columns(pl.col("rating").cast(pl.String)).pipe(set_row, 0, rating="hard"))
    assert text.problems.rows() == [(0, "rating", "not an integer: 'hard'")]
