"""Maze-30x30-Hard as a task: hrm/maze.py's encoding, checks, dihedral transforms, verifier and
generator, and what the cards and reports say of it."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa

import hrm.maze as maze
from hrm.build import AUGMENTED, MAZE_MAX_AUG, ORIGINAL, augment_mazes
from hrm.evaluate.perturbations import Perturbations, identity_cells
from hrm.evaluate.selection import any_pass_solves
from hrm.tasks.base import DIHEDRAL_WORDS, BoardView, EvalRules, ExamplesRule, GeneratorOption, RawDiagnosis, RawRule, Task, describe_values

MAZE_SHIFTS = 2  # a maze's relabellings: as is, and with S and G exchanged
# The id of the maze examples checks (Task.examples_checks_id) that the lineage of every maze dataset records.
MAZE_CHECKS_ID = "maze-4b1e0c2a9d73"
NOT_CHECKED = -1  # a raw row whose strings are malformed: the format checks report it


# ---------------------------------------------------------------------- the raw table's rules
# From hrm.maze.check_mazes: the question holds exactly one S and one G; the answer keeps every wall, S and
# G and marks open cells only, and those cells with S and G form one simple 4-connected path from S to G;
# that path is as short as the BFS optimum; and (optional) the shortest path is unique, so the label is
# the only right answer. The rating is not checked against the path: what the official CSV's rating
# counts could not be verified (hrm.maze's docstring).

START_AND_GOAL, SHORTEST_PATH = "maze_start_and_goal", "maze_answer_is_shortest_path"  # the rules' names
UNIQUE = "maze_unique_shortest_path"


def _raw_codes(questions: np.ndarray, answers: np.ndarray, ok: np.ndarray):
    """(hrm.maze.check_mazes reason int8 [N] (NOT_CHECKED where not ``ok``), BFS moves S -> G of the
    question int64 [N], the answer's marked cells + 1 int64 [N]) (-1 where not checked)."""
    n = len(questions)
    code = np.full(n, NOT_CHECKED, dtype=np.int8)
    shortest = np.full(n, -1, dtype=np.int64)
    path_moves = np.full(n, -1, dtype=np.int64)
    if ok.any():
        q, a = maze.strings_to_tokens(questions[ok]), maze.strings_to_tokens(answers[ok])
        code[ok] = maze.check_mazes(q, a)
        shortest[ok] = maze.shortest_path_lengths(q)
        path_moves[ok] = (a == maze.PATH).sum(1) + 1
    return code, shortest, path_moves


def _raw_diagnosis(questions, answers, question_ok, answer_ok) -> RawDiagnosis:
    code, shortest, path_moves = _raw_codes(questions, answers, question_ok & answer_ok)
    fails = {START_AND_GOAL: (maze.REASON_START_GOAL,),
             SHORTEST_PATH: (maze.REASON_ANSWER_MISMATCH, maze.REASON_NOT_A_PATH, maze.REASON_NOT_SHORTEST),
             UNIQUE: (maze.REASON_NOT_UNIQUE,)}
    passed = {rule: ~np.isin(code, codes) for rule, codes in fails.items()}

    def reason(rule: str, row: int) -> str:
        why = maze.REASONS.get(int(code[row]), rule)
        if code[row] == maze.REASON_NOT_SHORTEST:
            why += f" ({path_moves[row]} moves, the shortest {shortest[row]})"
        return why

    reasons = {rule: {int(r): reason(rule, int(r)) for r in np.flatnonzero(~ok)} for rule, ok in passed.items()}
    return RawDiagnosis(len(code), passed, reasons)


# ---------------------------------------------------------------------- the examples table's rules


def _solved(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Every row's labels are its inputs with one shortest S-G path marked (hrm.maze.verify_paths)."""
    return maze.verify_paths(columns["inputs"], columns["labels"])


def _no_hints(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """variant is ``original`` or ``augmented``: mazes have no hint examples."""
    return np.isin(columns["variant"], (ORIGINAL, AUGMENTED))


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
    headline_distribution = "path_moves"

    def difficulty(self, questions: np.ndarray) -> np.ndarray:
        return maze.shortest_path_lengths(maze.strings_to_tokens(questions))

    def generate(self, n: int, seed: int, options: Mapping[str, Any]) -> tuple[list[str], list[str], np.ndarray]:
        mazes = maze.generate_mazes(n, seed=seed, min_path=options["min_path"])
        return maze.tokens_to_strings(mazes.questions), maze.tokens_to_strings(mazes.answers), mazes.ratings

    def describe_split(self, batches, n: int) -> dict:
        """The distributions of the rating and of the answer's path moves (describe_values)."""
        moves, ratings = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for _, a, r in batches:
            moves.append((maze.strings_to_tokens(a) == maze.PATH).sum(1) + 1)
            ratings.append(np.asarray(r, np.int64))
        return {"rating": describe_values(np.concatenate(ratings)),
                "path_moves": describe_values(np.concatenate(moves))}

    def augment(self, questions, answers, num_aug, rng):
        return augment_mazes(maze.strings_to_tokens(questions), maze.strings_to_tokens(answers), num_aug, rng)

    def transform_arrays(self, columns):
        return columns["dihedral"]

    def transform_frame_columns(self, transforms, n):
        return {"dihedral": transforms}

    # ------------------------------------------------------------------ the tables' rules (schemas/)

    raw_rules = (RawRule(START_AND_GOAL, "question"), RawRule(SHORTEST_PATH, "answer"),
                 RawRule(UNIQUE, "question", unique_only=True))
    raw_unique_means = "a unique shortest path each"
    raw_schema_names = ("raw maze", "raw maze (unique shortest paths)")

    def diagnose_raw(self, questions, answers, question_ok, answer_ok, check_unique):
        return _raw_diagnosis(questions, answers, question_ok, answer_ok)

    # Every row a maze with its answer (uniqueness of the shortest path is the raw stage's check, not
    # repeated here); an original has transform 0, an augmented example a transform in 1..7, no two of
    # its group alike; no hints and no parents.
    examples_checks_id = MAZE_CHECKS_ID
    examples_check_prefix = "maze_"
    examples_schema_names = ("maze examples", "maze shards")
    token_ranges = {"inputs": (1, 4), "labels": (1, 5)}  # wall..goal; plus the path
    transform_limits = {"dihedral": 7}
    examples_rules = (
        ExamplesRule("maze_no_hints", ("variant",), _no_hints, "variant: mazes have no hint examples", column="variant",
                     examples_only=True),
        ExamplesRule("maze_solved", ("inputs", "labels"), _solved,
                     "labels: not the input maze with one shortest S-G path marked (one S and one G; walls, S and "
                     "G kept; path marks on open cells forming one simple path as short as the BFS optimum)"),
    )
    lineage_reasons = {
        "original_is_identity": "original with a transform other than 0 (identity)",
        "augmented_matches_original": "augmented maze is not its transform (1..7, once per group) applied to its "
                                      "group's original, with the original's source, rating and raw_index",
    }

    def imported_transforms(self, identifiers, inputs, labels):
        return np.zeros(len(inputs), dtype=np.uint8)

    def is_identity(self, transforms):
        return transforms == 0

    def augmented_matches(self, group_id, transforms, rows, src, inputs, labels):
        k = transforms
        kr = k[rows]
        ok = (kr >= 1) & (kr <= 7)
        safe = np.where(ok, kr, 0)
        ok &= (maze.dihedral(inputs[src], safe) == inputs[rows]).all(axis=1)
        ok &= (maze.dihedral(labels[src], safe) == labels[rows]).all(axis=1)
        key = group_id.astype(np.int64) * 8 + k  # one transform once per group
        _, first, counts = np.unique(key, return_index=True, return_counts=True)
        repeated = np.ones(len(k), dtype=bool)
        repeated[first[counts == 1]] = False
        return ok & ~repeated[rows]

    def board_view(self) -> BoardView:
        return BoardView(30, 30, {0: ("", "#ffffff"), 1: ("", "#333333"), 2: ("", "#ffffff"), 3: ("S", "#2ecc40"),
                                  4: ("G", "#ff4136"), 5: ("", "#ffdc00")})

    def conflict_cells(self, questions, answers):
        # The cells the analysis' error measure counts: a wall, S or G changed, a gap, branch or dead end of the path.
        return maze.broken_cells(questions, answers)

    def describe_transform(self, columns):
        return DIHEDRAL_WORDS[int(columns["dihedral"])]

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
    question_chars="[# SG]", answer_chars="[# SGo]",
    generator_options=(GeneratorOption("min_path", 1, 900, maze.HARD_MIN_PATH, "Fewest moves of the shortest S-G path "
                                       "(the paper's hard set: more than 110).", show_default=True),),
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
        "generator": "builtin maze generator",
        "augment_limit": "its other dihedral transforms",
        "relabellings": "as is, S and G exchanged",
        "table_rows": "mazes",
    },
)
