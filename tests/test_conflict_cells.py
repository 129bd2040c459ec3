"""Task.conflict_cells (issue 31, item 3): the cells of an answer that break a rule of its task, which the viewer
marks on a trace's board; each task's cells are where its error measure counts (hrm.sudoku.conflict_count,
hrm.maze.broken_path_cells), on real puzzles and mazes, right answers and damaged ones."""

from __future__ import annotations

import numpy as np
import polars as pl

from conftest import REAL_SUDOKU
from hrm import maze
from hrm.sudoku import conflict_count, grids_to_tokens, strings_to_grids
from hrm.tasks import TASKS, SUDOKU


def test_sudoku_marks_repeated_digits_and_changed_givens():
    df = pl.read_csv(REAL_SUDOKU / "valid.csv", infer_schema=False).head(20)
    q = grids_to_tokens(strings_to_grids(df["question"].to_list()))
    a = grids_to_tokens(strings_to_grids(df["answer"].to_list()))
    assert not SUDOKU.conflict_cells(q, a).any() and not SUDOKU.conflict_cells(q, q).any()  # a solution, the givens
    # Two digits of row 0 swapped where both cells are blanks, in one box here: each repeats in its column (4 cells
    # marked: the two and the cell of their digit in each column); a given overwritten is marked itself as well.
    rng = np.random.default_rng(0)
    damaged = a.copy()
    blanks = q[0, :9] == 1
    i, j = np.flatnonzero(blanks)[:2]
    damaged[0, [i, j]] = damaged[0, [j, i]]
    marked = SUDOKU.conflict_cells(q[:1], damaged[:1])[0]
    assert i // 3 == j // 3 and set(np.flatnonzero(marked)) >= {i, j} and marked.sum() == 4
    given = int(np.flatnonzero(q[1] != 1)[0])
    damaged[1, given] = 2 + (q[1, given] - 2 + 1) % 9  # another digit: a repeat and a changed given
    assert SUDOKU.conflict_cells(q[1:2], damaged[1:2])[0, given]
    noise = rng.integers(1, 11, size=(300, 81))  # blanks and digits at random: marked exactly where it counts
    counted = conflict_count(np.where(noise >= 2, noise - 1, 0))
    assert ((SUDOKU.conflict_cells(np.ones_like(noise), noise).sum(1) > 0) == (counted > 0)).all() and counted.any()


def test_a_maze_marks_the_cells_its_error_measure_counts():
    task = next(t for t in TASKS.values() if t.seq_len == maze.SEQ_LEN and t.name.startswith("maze"))
    batch = maze.generate_mazes(6, seed=4)
    q, a = batch.questions, batch.answers
    assert not task.conflict_cells(q, a).any()
    rng = np.random.default_rng(1)
    damaged = a.copy()
    for row in damaged:  # a few cells set to a random token: gaps, branches, walls broken
        row[rng.integers(0, maze.SEQ_LEN, size=12)] = rng.integers(maze.WALL, maze.PATH + 1, size=12)
    marked = task.conflict_cells(q, damaged)
    assert (marked.sum(1) == maze.broken_path_cells(q, damaged)).all() and marked.any()


def test_a_task_without_cell_rules_marks_none():
    assert [name for name, t in TASKS.items() if t.conflict_cells(np.zeros((1, t.seq_len), np.uint8),
                                                                   np.zeros((1, t.seq_len), np.uint8)) is None] \
        == [name for name, t in TASKS.items() if t.scoring == "votes"]
