"""What evaluating each task needs of it (:class:`TaskRules`): Sudoku's (:data:`SUDOKU_RULES`) and
the mazes' (:data:`MAZE_RULES`), with their verifiers and error measures. Every piece of the
evaluation that knows a task is here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hrm import maze
from hrm.evaluate.selection import any_pass_solves, paper_vote
from hrm.sudoku import BLANK_TOKEN, SEQ_LEN, agrees_with_givens, conflict_count, is_valid_solution

# Rating (backtracks) buckets [edge_i, edge_{i+1}); the last is open. Blank-count buckets likewise.
RATING_EDGES: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128)
BLANK_EDGES: tuple[int, ...] = (0, 6, 11, 21, 31, 41, 51, 56, 61, 65)


def digit_values(tokens: np.ndarray) -> np.ndarray:
    """Sudoku tokens (2..10 digits) -> grid values 1..9; anything else (blank 1, pad 0, -100) -> 0."""
    t = np.asarray(tokens).astype(np.int16)
    return np.where((t >= 2) & (t <= 10), t - 1, 0).astype(np.uint8)


def verifier(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """bool [...]: answer tokens form a valid complete grid that keeps the question's givens.

    questions: tokens [..., 81] (1 = blank), answers: tokens [..., 81] (any 0..10).
    """
    q = np.asarray(questions)
    a = np.asarray(answers)
    q, a = np.broadcast_arrays(q, a)
    shape = a.shape[:-1]
    qg = np.where(q >= 1, q - 1, 0).astype(np.uint8).reshape(-1, SEQ_LEN)
    ag = digit_values(a).reshape(-1, SEQ_LEN)
    return (is_valid_solution(ag) & agrees_with_givens(qg, ag)).reshape(shape)


def _maze_rows(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], questions: np.ndarray,
               answers: np.ndarray) -> np.ndarray:
    """``fn`` of hrm.maze (rows of questions, rows of answers -> one value per row) over answers
    [..., 900], questions broadcast against them; shaped [...]."""
    q, a = np.broadcast_arrays(np.asarray(questions), np.asarray(answers))
    width = a.shape[-1]
    out = fn(q.reshape(-1, width).astype(np.uint8), np.clip(a, 0, 255).reshape(-1, width).astype(np.uint8))
    return out.reshape(a.shape[:-1])


def maze_verifier(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """bool [...]: the answer is an optimal S-G path of the maze (hrm.maze.verify_paths), no label read."""
    return _maze_rows(maze.verify_paths, questions, answers)


def _sudoku_revealable(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.asarray(inputs) == BLANK_TOKEN


def sudoku_conflicts(questions: np.ndarray | None, answers: np.ndarray) -> np.ndarray:
    """int64 [...]: the fork's error measure of answer tokens [..., 81]: excess repeats of digits per
    row, column and box, summed (cells not decoded as a digit ignored; the question is not read)."""
    t = np.asarray(answers)
    return conflict_count(digit_values(t).reshape(-1, t.shape[-1])).reshape(t.shape[:-1])


def maze_broken_cells(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """int64 [...]: cells where the answer [..., 900] breaks a local rule of a path in its maze
    (hrm.maze.broken_path_cells); questions [..., 900] broadcast against it."""
    return _maze_rows(maze.broken_path_cells, questions, answers)


def _maze_revealable(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (np.asarray(inputs) == maze.OPEN) & (np.asarray(labels) == maze.PATH)


@dataclass(frozen=True)
class TaskRules:
    """What evaluating a task needs of it: Sudoku's (``SUDOKU_RULES``) or the mazes' (``MAZE_RULES``).

    ``decided``: the token of the cells the model fills in (a Sudoku blank, a maze's open cell), whose
    accuracy and calibration are reported; ``verify(questions, answers)``: the label-free verifier;
    ``solves(correct, halted)``: the paper's rule over checkpoints x passes; ``revealable(inputs, labels)``:
    the cells an easy tier reveals from the label (Sudoku blanks; the maze's shortest-path cells).
    ``errors(questions, answers)``: the analysis' error measure of an answer (``error_name``: Sudoku
    conflicts, a maze's broken path cells), read on the cells of ``mark_token`` .. ``mark_last``
    (``mark_name``: digits, path marks). ``input_tokens`` / ``label_tokens``: the encoding's ranges.
    """

    task: str
    seq_len: int
    decided: int
    perturbations: tuple[str, ...]
    verify: Callable[[np.ndarray, np.ndarray], np.ndarray]
    solves: Callable[[np.ndarray, np.ndarray], np.ndarray]
    revealable: Callable[[np.ndarray, np.ndarray], np.ndarray]
    rating_edges: tuple[int, ...]
    blank_edges: tuple[int, ...]
    input_tokens: tuple[int, int]
    label_tokens: tuple[int, int]
    errors: Callable[[np.ndarray, np.ndarray], np.ndarray]
    error_name: str
    mark_tokens: tuple[int, int]
    mark_name: str

    def marks(self, answers: np.ndarray) -> np.ndarray:
        """int [...]: cells of answers [..., L] decoded as a mark the error measure reads."""
        a = np.asarray(answers)
        return ((a >= self.mark_tokens[0]) & (a <= self.mark_tokens[1])).sum(-1)


SUDOKU_RULES = TaskRules("sudoku", SEQ_LEN, BLANK_TOKEN, ("shift", "relabel", "symmetry"), verifier, paper_vote,
                         _sudoku_revealable, RATING_EDGES, BLANK_EDGES, (1, 10), (2, 10), sudoku_conflicts, "conflicts",
                         (2, 10), "digits")
# Mazes: 2 passes (the fork's S/G swap), a path is right when exact (any pass, halted or not), rated by
# its moves (the hard set: more than 110), "blanks" are the open cells the model decides.
MAZE_RULES = TaskRules("maze", maze.SEQ_LEN, maze.OPEN, ("swap",), maze_verifier, any_pass_solves, _maze_revealable,
                       (0, 111, 121, 131, 141, 161, 181), (0, 300, 350, 400, 450, 500), (maze.WALL, maze.GOAL),
                       (maze.WALL, maze.PATH), maze_broken_cells, "broken_path_cells", (maze.PATH, maze.PATH),
                       "path_cells")
RULES = {r.task: r for r in (SUDOKU_RULES, MAZE_RULES)}


def task_rules(task: str) -> TaskRules:
    try:
        return RULES[task]
    except KeyError:
        raise ValueError(f"no evaluation rules for task {task!r}: one of {', '.join(RULES)}") from None

