"""Sudoku-Extreme as a task: hrm/sudoku.py's encoding and rules, hrm.solver's rating, hrm.generate's
puzzles, hrm.build's symmetries and hints, the evaluation's rules (the fork's vote, the verifier, the
conflict count, the digit perturbations), and what the cards and reports say of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from hrm.evaluate.perturbations import Perturbations, identity_cells
from hrm.evaluate.selection import paper_vote
from hrm.rng import PERTURB as PERTURB_STREAM  # the seed's stream id: hrm/rng.py
from hrm.sudoku import (BLANK_TOKEN, SEQ_LEN, Transforms, agrees_with_givens, conflict_cells, conflict_count,
                        digit_shift_maps, is_valid_solution, random_transforms)
from hrm.tasks.base import (BoardView, EvalRules, ExamplesRule, GeneratorOption, RawDiagnosis, RawRule, Task, uint8s,
                            well_formed)

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

# The id of the examples checks (Task.examples_checks_id) that the lineage of every Sudoku dataset records.
CHECKS_ID = "65988d6b24335974"


# ---------------------------------------------------------------------- the raw table's rules


@dataclass(frozen=True)
class SudokuDiagnosis:
    """The Sudoku facts of raw rows, computed once (vectorised).

    A check whose inputs are malformed (wrong length, bad character, null) passes
    here: the format checks report those rows, the grid checks stay quiet.
    """

    question_ok: np.ndarray  # bool [N]: question is 81 characters over '.1-9'
    answer_ok: np.ndarray  # bool [N]: answer is 81 digits 1-9
    answer_is_solution: np.ndarray  # bool [N]: every row, column and box holds 1..9 once
    first_mismatch: np.ndarray  # int16 [N]: first cell where the answer changes a given, -1 if none
    num_solutions: np.ndarray | None  # int64 [N]: 0, 1 or 2 (= several); -1 where not counted

    def __len__(self) -> int:
        return len(self.question_ok)

    @property
    def matches_givens(self) -> np.ndarray:
        return self.first_mismatch < 0

    @property
    def unique(self) -> np.ndarray:
        if self.num_solutions is None:
            raise ValueError("solutions were not counted for this table")
        return (self.num_solutions == 1) | (self.num_solutions < 0)


def _parse(strings: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """uint8 grids [len(strings), 81]; rows where ``ok`` is False stay all zero."""
    from hrm.sudoku import SEQ_LEN, strings_to_grids

    grids = np.zeros((len(strings), SEQ_LEN), dtype=np.uint8)
    if ok.any():
        grids[ok] = strings_to_grids(strings[ok])
    return grids


def diagnose(questions, answers, *, count_solutions: bool = True, question_ok: np.ndarray | None = None,
             answer_ok: np.ndarray | None = None) -> SudokuDiagnosis:
    """Parse both columns (strings [N]) once and run every grid check; ``question_ok``/``answer_ok``:
    which strings are well formed (None: matched here against SUDOKU's patterns)."""
    from hrm.sudoku import agrees_with_givens, is_valid_solution

    questions, answers = np.asarray(questions, dtype=object), np.asarray(answers, dtype=object)
    n = len(questions)
    if len(answers) != n:
        raise ValueError(f"{n} questions but {len(answers)} answers")
    q_ok = well_formed(questions, SUDOKU.question_pattern) if question_ok is None else question_ok
    a_ok = well_formed(answers, SUDOKU.answer_pattern) if answer_ok is None else answer_ok
    is_solution = np.ones(n, dtype=bool)
    first_mismatch = np.full(n, -1, dtype=np.int16)
    num_solutions = np.full(n, -1, dtype=np.int64) if count_solutions else None
    q, a = _parse(questions, q_ok), _parse(answers, a_ok)
    if a_ok.any():
        is_solution[a_ok] = is_valid_solution(a[a_ok])
    both = q_ok & a_ok
    if both.any():
        agrees = agrees_with_givens(q[both], a[both])
        changed = (q[both] != 0) & (q[both] != a[both])
        first_mismatch[both] = np.where(agrees, -1, changed.argmax(axis=1))
    if count_solutions and q_ok.any():
        from hrm.solver import count_solutions as counter  # the solver is only needed here

        num_solutions[q_ok] = np.asarray(counter(q[q_ok]), dtype=np.int64)
    return SudokuDiagnosis(q_ok, a_ok, is_solution, first_mismatch, num_solutions)


# The rules' names (the raw schema's checks).
IS_SOLUTION, MATCHES_GIVENS = "sudoku_answer_is_solution", "sudoku_answer_matches_givens"
UNIQUE = "sudoku_unique_solution"


def _raw_reasons(diag: SudokuDiagnosis, questions: np.ndarray, answers: np.ndarray) -> dict[str, dict[int, str]]:
    def given(row: int) -> str:
        cell = int(diag.first_mismatch[row])
        return (f"disagrees with the question's given at row {cell // 9 + 1}, column {cell % 9 + 1}"
                f" (given {questions[row][cell]}, answer {answers[row][cell]})")

    reasons = {
        IS_SOLUTION: {int(r): "not a valid Sudoku solution (a digit repeats in a row, column or box)"
                      for r in np.flatnonzero(~diag.answer_is_solution)},
        MATCHES_GIVENS: {int(r): given(int(r)) for r in np.flatnonzero(~diag.matches_givens)},
    }
    if diag.num_solutions is not None:
        reasons[UNIQUE] = {int(r): "has no solution" if diag.num_solutions[r] == 0 else "has several solutions"
                           for r in np.flatnonzero(~diag.unique)}
    return reasons


# ---------------------------------------------------------------------- the examples table's rules


def _valid_solution(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """``labels`` are tokens of a valid Sudoku solution. Checked on every non-hint row; a hint's
    labels are compared byte for byte with its parent's (the hint_matches_parent check)."""
    import hrm.build as build

    labels = columns["labels"]
    rows = np.flatnonzero(columns["variant"] != build.HINT)
    passed = np.ones(len(labels), dtype=bool)
    passed[rows] = build.valid_solution_tokens(labels if len(rows) == len(labels) else labels[rows])
    return passed


def _inputs_agree_with_labels(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Every given of the input (token != 1) equals the label in that cell."""
    import hrm.build as build

    return build.inputs_agree(columns["inputs"], columns["labels"])


class SudokuTask(Task):
    headline_distribution = "blanks"

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

    def describe_split(self, batches, n: int) -> dict:
        """The rating / blank-count distribution (hrm.generate.describe); grids parsed batch by batch."""
        from hrm.generate import describe
        from hrm.sudoku import strings_to_grids

        questions = np.zeros((n, SEQ_LEN), dtype=np.uint8)
        ratings = np.zeros(n, dtype=np.int64)
        offset = 0
        for q, _, r in batches:
            k = len(q)
            if k:
                questions[offset:offset + k] = strings_to_grids(q)
                ratings[offset:offset + k] = r
            offset += k
        return describe(questions, ratings)

    def augment(self, questions, answers, num_aug, rng):
        from hrm.build import augment_sudoku
        from hrm.sudoku import strings_to_grids

        return augment_sudoku(strings_to_grids(questions), strings_to_grids(answers), num_aug, rng)

    def transform_arrays(self, columns):
        from hrm.sudoku import Transforms

        return Transforms(*(columns[name] for name in self.transform_names))

    def transform_frame_columns(self, transforms, n):
        return {name: getattr(transforms, name) for name in self.transform_names}

    # ------------------------------------------------------------------ the tables' rules (schemas/)

    raw_rules = (RawRule(IS_SOLUTION, "answer", column_check=True), RawRule(MATCHES_GIVENS, "answer"),
                 RawRule(UNIQUE, "question", unique_only=True))
    raw_unique_means = "exactly one solution each"
    raw_schema_names = ("raw", "raw (unique solutions)")

    def diagnose_raw(self, questions, answers, question_ok, answer_ok, check_unique):
        diag = diagnose(questions, answers, count_solutions=check_unique, question_ok=question_ok,
                        answer_ok=answer_ok)
        passed = {IS_SOLUTION: diag.answer_is_solution, MATCHES_GIVENS: diag.matches_givens}
        if check_unique:
            passed[UNIQUE] = diag.unique
        return RawDiagnosis(len(diag), passed, _raw_reasons(diag, questions, answers))

    def raw_character_reason(self, column, text):
        import re

        bad = re.search(r"[^.1-9]" if column == "question" else r"[^1-9]", text)
        what = "'.' or 1-9" if column == "question" else "a digit 1-9"
        return f"character '{bad.group()}' at position {bad.start()} (0-based) is not {what}" if bad else None

    examples_checks_id = CHECKS_ID
    token_ranges = {"inputs": (1, 10), "labels": (2, 10)}
    examples_rules = (
        ExamplesRule("examples_valid_solution", ("variant", "labels"), _valid_solution,
                     "labels: not a valid Sudoku solution (a digit repeats in a row, column or box)", column="labels"),
        ExamplesRule("examples_inputs_agree_with_labels", ("inputs", "labels"), _inputs_agree_with_labels,
                     "inputs: a given differs from the label in that cell"),
    )
    lineage_reasons = {
        "original_is_identity": "original with a non-identity transform or a parent",
        "augmented_matches_original": "augmented example is not its transform (a valid symmetry) applied to its "
                                      "group's original",
        "hint_matches_parent": "hint does not match its parent (same group, labels, transform, source, rating, "
                               "raw_index; keeps the parent's givens and adds at least one)",
    }

    def imported_transforms(self, identifiers, inputs, labels):
        from hrm.sudoku import Transforms

        return Transforms.identity(len(inputs))

    def is_identity(self, transforms):
        import hrm.build as build

        return build.is_identity(transforms)

    def augmented_matches(self, group_id, transforms, rows, src, inputs, labels):
        import hrm.build as build
        from hrm.sudoku import Transforms

        t = transforms
        ok = build.valid_symmetries(Transforms(t.digit_map[rows], t.transpose[rows], t.row_order[rows],
                                               t.col_order[rows]))
        ok &= build.transformed_equal(inputs, src, t, rows, inputs)
        ok &= build.transformed_equal(labels, src, t, rows, labels)
        return ok

    def hints_match_parents(self, examples, rows, parents):
        import hrm.build as build

        return build.hints_match_parents(examples, rows, parents)

    def board_view(self) -> BoardView:
        # Blanks (and padding) drawn empty; the page marks the givens (the input's digits) itself.
        digits = {token: (str(token - 1), "#ffffff") for token in range(2, 11)}
        return BoardView(9, 9, {0: ("", "#ffffff"), BLANK_TOKEN: ("", "#ffffff"), **digits}, block=3)

    def conflict_cells(self, questions, answers):
        # A digit repeated in a row, column or box, or a given the answer changed: what the verifier refuses.
        q, a = digit_values(questions), digit_values(answers)
        return conflict_cells(a) | ((q > 0) & (a != q))

    def describe_transform(self, columns):
        order = list(range(9))
        words = ["transposed"] if columns["transpose"] else []
        if list(columns["row_order"]) != order:
            words.append("rows " + "".join(str(r + 1) for r in columns["row_order"]))
        if list(columns["col_order"]) != order:
            words.append("columns " + "".join(str(c + 1) for c in columns["col_order"]))
        if list(columns["digit_map"])[1:] != list(range(1, 10)):
            words.append("digits 123456789 -> " + "".join(str(d) for d in list(columns["digit_map"])[1:]))
        return ", ".join(words) or "identity"

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
    question_chars="[.1-9]", answer_chars="[1-9]",
    generator_options=(
        GeneratorOption("min_blanks", 0, 81, 0, "Fewest blank cells per puzzle."),
        GeneratorOption("max_blanks", 0, 81, 64, "Most blank cells per puzzle."),
        GeneratorOption("min_rating", 0, None, 0, "Lowest rating (backtracks) kept."),
    ),
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
        "generator": "builtin generator",
        "table_rows": "puzzles",
    },
)
