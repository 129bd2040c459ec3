"""The tasks HRM solves, as the rest of the code names them: Sudoku-Extreme and Maze-30x30-Hard.

A :class:`Task` holds what is fixed about a task whatever the run: its sequence length and
vocabulary (the model's ``seq_len`` and ``vocab_size``), what one example is called, the reference
dataset on the Hugging Face Hub and what its rating measures. Facts only, so that code naming a
task does not import every task's rules: those live in its module (hrm.sudoku with hrm.solver,
hrm.maze), the raw table's schema of each in schemas/ (raw.py, raw_maze.py). A third task
(ARC-AGI) would be a third member here, its module and its schema.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Task", "SUDOKU", "MAZE", "TASKS", "get_task"]


@dataclass(frozen=True)
class Task:
    name: str
    noun: str  # one example: "puzzle", "maze"
    seq_len: int
    vocab_size: int  # tokens incl. padding 0
    hf_repo: str  # the reference dataset (train.csv, test.csv in the raw columns)
    hf_revision: str  # its pinned commit; "main" where none is pinned yet
    difficulty_means: str  # what the raw table's rating measures


SUDOKU = Task("sudoku", "puzzle", 81, 11, "sapientinc/sudoku-extreme",
              # Holds train.csv (3,831,994 rows) and test.csv (422,786); public reproductions pin it.
              "58942f96baeb572ca3127e2a9e9c70f330783d6b", "tdoku backtracks (hrm.solver.rate)")
# 1,000 train and 1,000 test mazes. No commit was pinned here yet (the Hub was out of reach when this
# was written): `main` is used, and the raw stage records the commit it resolved.
MAZE = Task("maze", "maze", 900, 6, "sapientinc/maze-30x30-hard-1k", "main",
            "moves of the shortest S-G path (hrm.maze.shortest_path_lengths)")
TASKS = {t.name: t for t in (SUDOKU, MAZE)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}: one of {', '.join(TASKS)}") from None
