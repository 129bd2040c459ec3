"""Sudoku-Extreme as a task: hrm/sudoku.py's encoding and rules, hrm.solver's rating, hrm.generate's
puzzles, hrm.build's symmetries and hints, and what the cards and reports say of it."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from hrm.tasks.base import EvalRules, Task, uint8s

# The rating and blank-count buckets of the evaluation's tables.
RATING_EDGES: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128)
BLANK_EDGES: tuple[int, ...] = (0, 6, 11, 21, 31, 41, 51, 56, 61, 65)


class SudokuTask(Task):
    def difficulty(self, questions: np.ndarray) -> np.ndarray:
        from hrm.solver import rate
        from hrm.sudoku import strings_to_grids

        return np.asarray(rate(strings_to_grids(questions)), dtype=np.int64)

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> tuple[list[str], list[str], np.ndarray]:
        from hrm.generate import generate_puzzles
        from hrm.sudoku import grids_to_strings

        puzzles = generate_puzzles(n, seed=seed, min_blanks=options["min_blanks"], min_rating=options["min_rating"],
                                   max_blanks=options["max_blanks"])
        return (grids_to_strings(puzzles.questions), grids_to_strings(puzzles.answers),
                np.asarray(puzzles.ratings, dtype=np.int64))

    def describe_split(self, questions: np.ndarray, answers: np.ndarray, ratings: np.ndarray) -> dict:
        from hrm.generate import describe
        from hrm.sudoku import strings_to_grids

        return describe(strings_to_grids(questions), ratings)

    def augment(self, questions, answers, num_aug, rng):
        from hrm.build import augment
        from hrm.sudoku import strings_to_grids

        return augment(strings_to_grids(questions), strings_to_grids(answers), num_aug, rng)

    def transform_arrays(self, columns):
        from hrm.sudoku import Transforms

        return Transforms(*(columns[name] for name in self.transform_names))

    def transform_frame_columns(self, transforms, n):
        return {name: getattr(transforms, name) for name in self.transform_names}

    @property
    def rules(self) -> EvalRules:
        from hrm import evaluate as ev
        from hrm.sudoku import BLANK_TOKEN

        return EvalRules(BLANK_TOKEN, ("shift", "relabel", "symmetry"), ev.verifier, ev.paper_vote,
                         ev._sudoku_revealable, RATING_EDGES, BLANK_EDGES, (1, 10), (2, 10), ev.sudoku_conflicts,
                         "conflicts", (2, 10), "digits")


SUDOKU = SudokuTask(
    name="sudoku", noun="puzzle", seq_len=81, vocab_size=11,
    # Holds train.csv (3,831,994 rows) and test.csv (422,786); public reproductions pin it.
    hf_repo="sapientinc/sudoku-extreme", hf_revision="58942f96baeb572ca3127e2a9e9c70f330783d6b",
    difficulty_means="tdoku backtracks (hrm.solver.rate)",
    encoding={"seq_len": 81, "vocab_size": 11, "pad": 0, "blank": 1, "digits": "2..10 = 1..9"},
    column_meanings={
        "variant": "`original`, `augmented` or `hint`",
        "parent_id": "for a hint: the puzzle_id it was made from; -1 otherwise",
        "rating": "the original's raw `rating` (solver backtracks)",
        "inputs": "tokens: 1 = blank, 2..10 = digits 1..9 (0 = padding, unused)",
        "labels": "tokens 2..10: the solution",
    },
    transform_columns=(
        ("digit_map", uint8s(10), "transform from the original: digit relabelling (digit_map[0] = 0)"),
        ("transpose", pa.bool_(), "transform: transpose first"),
        ("row_order", uint8s(9), "transform: out[r, c] = x[row_order[r], col_order[c]]"),
        ("col_order", uint8s(9), "transform: column order"),
    ),
    question_pattern=r"^[.1-9]{81}$", answer_pattern=r"^[1-9]{81}$",
    generator_options=("min_blanks", "max_blanks", "min_rating"),
    has_hints=True,
    records_name=False,  # Sudoku's lineages and manifests were written before a second task: they name none
    words={
        "card": {
            "tag": "sudoku",
            "title": "Sudoku-Extreme style dataset",
            "hf": "(Sudoku-Extreme, compiled by the HRM authors from public Sudoku collections)",
            "examples": "puzzles",
            "builtin": "These puzzles are much easier than Sudoku-Extreme's; they are for quick, offline runs.",
            "generator": "hrm.generate",
            "license_name": "sudoku-extreme-terms",
            "lineage": "Lineage: an example equals its group's original with its transform applied (optional "
                       "transpose, then rows/columns reordered, then digits relabelled); a hint also reveals some "
                       "blanks of its parent from the label.",
            "build": "random symmetries per train puzzle: digit relabelling, transpose, band/row and stack/column "
                     "permutations) -> `hrm hints` (hint dataset only: after every train example an easier copy with "
                     "extra givens)",
        },
        "report": {
            "vote": "the fork's Augmented HRM",
            "verified": "some pass gave a valid grid that keeps the givens",
            "vote_rule": "paper_vote reproduces the fork's rule (per checkpoint: passes that are right AND halted > "
                         "half of its halted passes; solved if any checkpoint does).",
            "tiers": "## Easy tiers (test puzzles with only k blanks left)",
            "left": "blanks left",
            "exact": "- exact: all 81 cells right. Passes are compared in the perturbed space (the fork's way); "
                     "label_free maps every answer back to the original digits and cells first.",
            "verifier": "verifier (valid grid, keeps the givens)",
            "cell": "blank",
        },
        "tokens": ("1 = blank, 2..10 = digits 1..9, docs/reference-semantics.md §2", "digit tokens 2..10"),
        "error_label": "Sudoku conflicts",
        "model_needs": "Sudoku (docs/reference-semantics.md §2)",
        "table_rows": "puzzles",
    },
)
