"""Maze-30x30-Hard as a task: hrm/maze.py's encoding, checks, dihedral transforms, verifier and
generator, and what the cards and reports say of it."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa

from hrm import maze
from hrm.build import MAZE_MAX_AUG
from hrm.evaluate.perturbations import Perturbations, identity_cells
from hrm.evaluate.selection import any_pass_solves
from hrm.tasks.base import EvalRules, Task

MAZE_SHIFTS = 2  # a maze's relabellings: as is, and with S and G exchanged


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


def maze_broken_cells(questions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """int64 [...]: cells where the answer [..., 900] breaks a local rule of a path in its maze
    (hrm.maze.broken_path_cells); questions [..., 900] broadcast against it."""
    return _maze_rows(maze.broken_path_cells, questions, answers)


def _revealable(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (np.asarray(inputs) == maze.OPEN) & (np.asarray(labels) == maze.PATH)


def make_perturbations(kind: str, count: int, seed: int) -> Perturbations:
    """``swap`` (count <= 2): pass 1 exchanges S and G, the fork's second maze pass."""
    if count > MAZE_SHIFTS:
        raise ValueError(f"a maze has 2 passes (as is, and with S and G exchanged), asked for {count}")
    maps = np.tile(np.arange(256, dtype=np.uint8), (count, 1))
    maps[1:, [maze.START, maze.GOAL]] = maps[1:, [maze.GOAL, maze.START]]
    return Perturbations(kind, maps, identity_cells(count, maze.SEQ_LEN))


# Mazes: 2 passes (the fork's S/G swap), a path is right when exact (any pass, halted or not), rated by
# its moves (the hard set: more than 110), "blanks" are the open cells the model decides.
RULES = EvalRules("maze", maze.SEQ_LEN, maze.OPEN, ("swap",), maze_verifier, any_pass_solves, _revealable,
                  (0, 111, 121, 131, 141, 161, 181), (0, 300, 350, 400, 450, 500), (maze.WALL, maze.GOAL),
                  (maze.WALL, maze.PATH), maze_broken_cells, "broken_path_cells", (maze.PATH, maze.PATH),
                  "path_cells", max_shifts=MAZE_SHIFTS)


class MazeTask(Task):
    def difficulty(self, questions: np.ndarray) -> np.ndarray:
        from hrm.maze import shortest_path_lengths, strings_to_tokens

        return shortest_path_lengths(strings_to_tokens(questions))

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> tuple[list[str], list[str], np.ndarray]:
        from hrm.maze import generate_mazes, tokens_to_strings

        mazes = generate_mazes(n, seed=seed, min_path=options["min_path"])
        return tokens_to_strings(mazes.questions), tokens_to_strings(mazes.answers), mazes.ratings

    def describe_split(self, questions: np.ndarray, answers: np.ndarray, ratings: np.ndarray) -> dict:
        from hrm.maze import PATH, describe_mazes, strings_to_tokens

        moves = (strings_to_tokens(answers) == PATH).sum(1) + 1 if len(answers) else np.zeros(0, np.int64)
        return {"rating": describe_mazes(ratings), "path_moves": describe_mazes(moves)}

    def augment(self, questions, answers, num_aug, rng):
        from hrm.build import augment_mazes
        from hrm.maze import strings_to_tokens

        return augment_mazes(strings_to_tokens(questions), strings_to_tokens(answers), num_aug, rng)

    def transform_arrays(self, columns):
        return columns["dihedral"]

    def transform_frame_columns(self, transforms, n):
        return {"dihedral": transforms}

    @property
    def rules(self) -> EvalRules:
        return RULES

    def make_perturbations(self, kind: str, count: int, seed: int) -> Perturbations:
        return make_perturbations(kind, count, seed)


# 1,000 train and 1,000 test mazes. No commit was pinned here yet (the Hub was out of reach when this
# was written): `main` is used, and the raw stage records the commit it resolved.
MAZE = MazeTask(
    name="maze", noun="maze", seq_len=900, vocab_size=6,
    hf_repo="sapientinc/maze-30x30-hard-1k", hf_revision="main",
    difficulty_means="moves of the shortest S-G path (hrm.maze.shortest_path_lengths)",
    encoding={"task": "maze", "seq_len": 900, "vocab_size": 6, "pad": 0,
              "tokens": "1 = # wall, 2 = open, 3 = S, 4 = G, 5 = o path"},
    column_meanings={
        "variant": "`original` or `augmented` (mazes have no hints)",
        "parent_id": "-1 (no maze is made from another example)",
        "rating": "the original's raw `rating` (moves of its shortest S-G path for the builtin source)",
        "inputs": "tokens: 1 = `#` wall, 2 = open, 3 = `S`, 4 = `G` (0 = padding, unused)",
        "labels": "tokens 1..5: the input with its shortest S-G path's open cells set to 5 (`o`)",
    },
    transform_columns=(
        ("dihedral", pa.uint8(), "transform from the original: dihedral id 0..7, the official builder's order "
                                 "(0 = identity)"),
    ),
    question_pattern=r"^[# SG]{900}$", answer_pattern=r"^[# SGo]{900}$",
    generator_options=("min_path",),
    max_aug=MAZE_MAX_AUG,
    words={
        "card": {
            "tag": "maze",
            "title": "Maze-30x30-Hard style dataset",
            "hf": "(Maze-30x30-Hard, the HRM authors' 30x30 mazes whose shortest path exceeds 110 moves)",
            "examples": "mazes",
            "builtin": "These mazes are corridors on a lattice with a few loops, not the official data's random "
                       "walls; their shortest paths are as long (at least 111 moves) and unique.",
            "generator": "hrm.maze.generate_mazes",
            "license_name": "maze-30x30-hard-terms",
            "lineage": "Lineage: an example equals its group's original with its dihedral transform applied "
                       "(hrm.maze.dihedral, the official builder's order); mazes have no hints.",
            "build": "of the other dihedral transforms per train maze: rotations and flips) -> `hrm hints` (passes "
                     "mazes through: they have no hints)",
        },
        "report": {
            "vote": "the fork's maze rule",
            "verified": "some pass gave an optimal S-G path of the maze",
            "vote_rule": "paper_vote is the fork's maze rule (solved if any pass of any checkpoint is exactly "
                         "right; halting is not required).",
            "tiers": "## Easy tiers (test mazes with only k cells of the shortest path left unmarked)",
            "left": "path cells left",
            "exact": "- exact: all 900 cells right. Passes are compared in the perturbed space (the fork's way: "
                     "pass 1 exchanges S and G in input and label); label_free maps every answer back first.",
            "verifier": "verifier (a connected S-G path through open cells, as short as the BFS optimum)",
            "cell": "open",
        },
        "tokens": ("1 = wall, 2 = open, 3 = S, 4 = G", "maze tokens 1..5 (5 = path)"),
        "error_label": "broken path cells",
        "model_needs": "the maze dataset",
        "augment_limit": "its other dihedral transforms",
        "table_rows": "mazes",
    },
)
