"""Sudoku-Extreme as a task: hrm/sudoku.py's encoding and rules, hrm.solver's rating, hrm.generate's
puzzles, hrm.build's symmetries and hints, the evaluation's rules (the fork's vote, the verifier, the
conflict count, the digit perturbations), and what the cards and reports say of it."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from hrm.evaluate.perturbations import Perturbations, identity_cells
from hrm.evaluate.selection import paper_vote
from hrm.rng import PERTURB as PERTURB_STREAM  # the seed's stream id: hrm/rng.py
from hrm.sudoku import (BLANK_TOKEN, SEQ_LEN, Transforms, agrees_with_givens, conflict_count, digit_shift_maps,
                        is_valid_solution, random_transforms)
from hrm.tasks.base import EvalRules, Task, uint8s

# ---------------------------------------------------------------- evaluation rules


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


def sudoku_conflicts(questions: np.ndarray | None, answers: np.ndarray) -> np.ndarray:
    """int64 [...]: the fork's error measure of answer tokens [..., 81]: excess repeats of digits per
    row, column and box, summed (cells not decoded as a digit ignored; the question is not read)."""
    t = np.asarray(answers)
    return conflict_count(digit_values(t).reshape(-1, t.shape[-1])).reshape(t.shape[:-1])


def _revealable(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.asarray(inputs) == BLANK_TOKEN


def digit_token_maps(digit_map: np.ndarray) -> np.ndarray:
    """uint8 [P, 256] token maps of Sudoku digit relabellings [P, 10] (0 pad and 1 blank fixed)."""
    lut = np.tile(np.arange(256, dtype=np.uint8), (len(digit_map), 1))
    lut[:, 1:11] = np.asarray(digit_map, np.uint8) + 1
    return lut


def _cell_index(t: Transforms) -> np.ndarray:
    """int64 [N, 81]: output cell i of transform n takes input cell index[n, i] (Transforms semantics:
    optional transpose, then out[r, c] = x[row_order[r], col_order[c]])."""
    cells = np.arange(SEQ_LEN)
    rows = t.row_order[:, cells // 9].astype(np.int64)  # source row in the (maybe transposed) grid
    cols = t.col_order[:, cells % 9].astype(np.int64)
    return np.where(np.asarray(t.transpose)[:, None], cols * 9 + rows, rows * 9 + cols)


def make_perturbations(kind: str, count: int, seed: int) -> Perturbations:
    """``shift``: shifts 0..count-1 (count <= 9). ``relabel`` / ``symmetry``: passes 1.. are drawn
    from ``numpy.random.default_rng([PERTURB_STREAM, seed])``; pass 0 is the identity."""
    identity = identity_cells(count, SEQ_LEN)
    if kind == "shift":
        if count > 9:
            raise ValueError(f"there are only 9 cyclic digit shifts, asked for {count}")
        return Perturbations(kind, digit_token_maps(digit_shift_maps(np.arange(count))), identity)
    rng = np.random.default_rng([PERTURB_STREAM, seed])
    if kind == "relabel":
        maps = np.tile(np.arange(10, dtype=np.uint8), (count, 1))
        if count > 1:
            maps[1:, 1:] = (np.argsort(rng.random((count - 1, 9)), axis=1) + 1).astype(np.uint8)
        return Perturbations(kind, digit_token_maps(maps), identity)
    t = Transforms.identity(count)  # symmetry
    if count > 1:
        r = random_transforms(rng, count - 1)
        t = Transforms(*(np.concatenate([a[:1], b]) for a, b in zip(dataclasses.astuple(t), dataclasses.astuple(r))))
    return Perturbations(kind, digit_token_maps(t.digit_map), _cell_index(t))


# The rating (backtracks) buckets [edge_i, edge_{i+1}) of the evaluation's tables; the last is open.
# Blank-count buckets likewise.
RATING_EDGES: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128)
BLANK_EDGES: tuple[int, ...] = (0, 6, 11, 21, 31, 41, 51, 56, 61, 65)
RULES = EvalRules("sudoku", SEQ_LEN, BLANK_TOKEN, ("shift", "relabel", "symmetry"), verifier, paper_vote, _revealable,
                  RATING_EDGES, BLANK_EDGES, (1, 10), (2, 10), sudoku_conflicts, "conflicts", (2, 10), "digits")



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
        return RULES

    def make_perturbations(self, kind: str, count: int, seed: int) -> Perturbations:
        return make_perturbations(kind, count, seed)


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
