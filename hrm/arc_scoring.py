"""ARC-AGI scoring: predictions back to the original puzzle, the vote, pass@k under both rules, the
Kaggle submission and the halting head's calibration (docs/reference-semantics.md §13).

Library code: arrays in, arrays and dicts out, no files. The semantics are the official notebook's
(sapientinc/HRM ``arc_eval.ipynb``) with TRM's fractional score and submission beside them:

- a prediction row is (version identifier, predicted board [900] of tokens, q_halt logit, index
  of the test input in its puzzle's test list); rows whose identifier is the blank are dropped;
- each board is cropped (``hrm.arc.decode_board``'s rectangle), then mapped back to the original
  puzzle: the inverse of the version's dihedral transform, then the inverse of its colour map;
- the vote: per (puzzle, test input) each distinct mapped-back grid is a candidate with its
  count and the mean sigmoid(q_halt) of its rows; candidates rank by count, then mean
  confidence, both descending; exact ties keep the order of first appearance in the rows (what
  the notebook's stable sort over insertion-ordered dicts does);
- pass@k, the official rule: a puzzle counts when every one of its test inputs has its label
  among its top k candidates; TRM's rule: a puzzle earns the fraction of its test inputs that do;
- the submission: per puzzle one entry per test input, ``attempt_1``/``attempt_2`` its top two
  candidates, the first repeated when only one exists (TRM), ``[[0]]`` when none exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from hrm.arc import COLOUR_OFFSET, INVERSE, NUM_COLOURS, SIDE, VOCAB_SIZE, Puzzle, Version, decode_board
from hrm.evaluate.calibration import calibration, sigmoid

FILL = 255  # a canvas cell outside its grid: not a colour, so a canvas alone identifies a grid and its shape
CHUNK_ROWS = 8192  # rows mapped back at once: bounds the int64 index temporaries to ~60 MB
DEFAULT_KS = (1, 2, 10)
EMPTY_ATTEMPT = [[0]]  # a test input without any prediction still gets an entry (TRM writes none)
_AUGMENTED_NAME = re.compile(r"^(?P<source>.+)_t(?P<transform>[0-7])_(?P<colours>[0-9]{%d})$" % NUM_COLOURS)


# ---------------------------------------------------------------- lineage


@dataclass(frozen=True)
class Lineage:
    """Per puzzle identifier: its source puzzle (index into ``sources``, -1 the blank), its dihedral
    transform and its colour map (colour c became ``colour_maps[i, c]``)."""

    sources: tuple[str, ...]
    source: np.ndarray  # int32 [identifiers]
    transform: np.ndarray  # int8 [identifiers]
    colour_maps: np.ndarray  # uint8 [identifiers, 10]


def parse_version_name(name: str) -> tuple[str, int, np.ndarray]:
    """A version name -> (source puzzle, transform, colour map), as the official notebook reads it:
    ``<puzzle>_t<k>_<10 colour-map digits>`` is augmented, any other name is the puzzle itself.
    (The notebook splits at every ``_``; the pattern gives the same answer for every name the
    builder writes and also for a puzzle name that contains ``_``.)"""
    match = _AUGMENTED_NAME.match(name)
    if match is None:
        return name, 0, np.arange(NUM_COLOURS, dtype=np.uint8)
    colour_map = np.array([int(c) for c in match["colours"]], dtype=np.uint8)
    if sorted(colour_map.tolist()) != list(range(NUM_COLOURS)) or colour_map[0] != 0:
        raise ValueError(f"version {name}: its colour map must permute 0..9 with 0 fixed")
    return match["source"], int(match["transform"]), colour_map


def lineage_from_names(identifiers: Sequence[str]) -> Lineage:
    """The lineage of the identifier list a build stores (``identifiers[0]`` the blank)."""
    return _lineage([None if i == 0 else parse_version_name(name) for i, name in enumerate(identifiers)])


def lineage_from_versions(versions: Sequence[Optional[Version]]) -> Lineage:
    """The lineage from ``hrm.arc.Version`` objects indexed by identifier (None for the blank)."""
    return _lineage([None if v is None else (v.source, v.transform, v.colour_map) for v in versions])


def _lineage(entries: Sequence[Optional[tuple[str, int, np.ndarray]]]) -> Lineage:
    sources: dict[str, int] = {}
    source = np.full(len(entries), -1, dtype=np.int32)
    transform = np.zeros(len(entries), dtype=np.int8)
    colour_maps = np.tile(np.arange(NUM_COLOURS, dtype=np.uint8), (len(entries), 1))
    for i, entry in enumerate(entries):
        if entry is None:
            continue
        source[i] = sources.setdefault(entry[0], len(sources))
        transform[i], colour_maps[i] = entry[1], entry[2]
    return Lineage(tuple(sources), source, transform, colour_maps)


def labels_by_puzzle(puzzles: Sequence[Puzzle]) -> dict[str, list[np.ndarray]]:
    """Per puzzle name, its test outputs in its test order: the labels the scoring compares with."""
    return {p.name: [output for _, output in p.tests] for p in puzzles}


def position_in_version(puzzle_indices: np.ndarray) -> np.ndarray:
    """Each example's position inside its version (``EncodedSplit.puzzle_indices``): in the test
    split, the index of its test input in the puzzle's test order (the builder keeps that order)."""
    counts = np.diff(np.asarray(puzzle_indices, dtype=np.int64))
    return np.arange(int(counts.sum())) - np.repeat(np.asarray(puzzle_indices[:-1], dtype=np.int64), counts)


# ---------------------------------------------------------------- back to the original frame


def dihedral_stack(stack: np.ndarray, k: int) -> np.ndarray:
    """``hrm.arc.dihedral`` applied to every grid of a stack [n, rows, cols] at once."""
    views = (lambda a: a, lambda a: np.rot90(a, 1, axes=(1, 2)), lambda a: np.rot90(a, 2, axes=(1, 2)),
             lambda a: np.rot90(a, 3, axes=(1, 2)), lambda a: np.flip(a, 2), lambda a: np.flip(a, 1),
             lambda a: np.swapaxes(a, 1, 2), lambda a: np.flip(np.rot90(a, 1, axes=(1, 2)), 2))
    return np.ascontiguousarray(views[int(k)](stack))


def crop_shapes(boards: np.ndarray) -> np.ndarray:
    """The official crop of every board [n, 900] at once -> int64 [n, 2] (rows, columns): the
    largest-area rectangle of colour tokens from the top-left corner, the first of equal areas,
    (0, 0) when the corner holds none (``hrm.arc.decode_board``, vectorised)."""
    boards = np.asarray(boards).reshape(-1, SIDE, SIDE)
    colour = (boards >= COLOUR_OFFSET) & (boards < VOCAB_SIZE)
    first_bad = np.where(colour.all(axis=2), SIDE, np.argmin(colour, axis=2))
    widths = np.minimum.accumulate(first_bad, axis=1)
    areas = widths * np.arange(1, SIDE + 1)
    best = np.argmax(areas, axis=1)
    rows = np.where(areas.max(axis=1) > 0, best + 1, 0)
    cols = np.where(rows > 0, widths[np.arange(len(boards)), best], 0)
    return np.stack([rows, cols], axis=1).astype(np.int64)


def map_back(boards: np.ndarray, transforms: np.ndarray, colour_maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boards [n, 900] predicted in their versions' frames -> (canvases uint8 [n, 30, 30], shapes
    int64 [n, 2]): each cropped grid mapped back to the original puzzle (inverse transform, then
    inverse colour map) at the canvas's top-left, ``FILL`` elsewhere. ``transforms`` [n] and
    ``colour_maps`` [n, 10] are each row's version lineage. Runs in chunks of ``CHUNK_ROWS``."""
    boards = np.asarray(boards, dtype=np.uint8).reshape(-1, SIDE * SIDE)
    canvases = np.full((len(boards), SIDE, SIDE), FILL, dtype=np.uint8)
    shapes = np.zeros((len(boards), 2), dtype=np.int64)
    for start in range(0, len(boards), CHUNK_ROWS):
        part = slice(start, start + CHUNK_ROWS)
        canvases[part], shapes[part] = _map_back_chunk(boards[part], np.asarray(transforms)[part],
                                                       np.asarray(colour_maps)[part])
    return canvases, shapes


def _map_back_chunk(boards, transforms, colour_maps):
    n = len(boards)
    shapes = crop_shapes(boards)
    # Inverse colour map as a token table per row: token c + 2 becomes (original colour) + 2.
    inverse = np.argsort(colour_maps, axis=1).astype(np.uint8)
    colours = np.take_along_axis(inverse, np.clip(boards.astype(np.int64) - COLOUR_OFFSET, 0, NUM_COLOURS - 1), 1)
    grid = colours.reshape(n, SIDE, SIDE)
    out = np.full((n, SIDE, SIDE), FILL, dtype=np.uint8)
    out_shapes = shapes.copy()
    # One batched inverse transform per (transform, rows, columns): few groups, each a plain slice.
    keys = (transforms.astype(np.int64) * (SIDE + 1) + shapes[:, 0]) * (SIDE + 1) + shapes[:, 1]
    for key in np.unique(keys):
        rows_of = np.flatnonzero(keys == key)
        t, h, w = int(transforms[rows_of[0]]), int(shapes[rows_of[0], 0]), int(shapes[rows_of[0], 1])
        moved = dihedral_stack(grid[rows_of, :h, :w], INVERSE[t])
        out[rows_of, : moved.shape[1], : moved.shape[2]] = moved
        out_shapes[rows_of] = moved.shape[1:]
    return out, out_shapes


def to_original_frame(board: np.ndarray, transform: int, colour_map: np.ndarray) -> np.ndarray:
    """One predicted board [900] -> its grid in the original puzzle's frame (uint8 [rows, cols])."""
    canvases, shapes = map_back(np.asarray(board).reshape(1, -1), np.array([transform]),
                                np.asarray(colour_map, dtype=np.uint8).reshape(1, -1))
    return canvases[0, : shapes[0, 0], : shapes[0, 1]].copy()


def _canvas(grid: np.ndarray) -> np.ndarray:
    out = np.full((SIDE, SIDE), FILL, dtype=np.uint8)
    out[: grid.shape[0], : grid.shape[1]] = grid
    return out


# ---------------------------------------------------------------- the vote


@dataclass(frozen=True)
class Votes:
    """The vote over every (puzzle, test input), a *group*: groups are numbered puzzle by puzzle in
    the labels' order, each puzzle's in its test order; candidates are numbered group by group,
    best first (count, then mean confidence, descending; exact ties by first appearance)."""

    puzzles: tuple[str, ...]
    puzzle_groups: np.ndarray  # int64 [puzzles + 1]: puzzle p's groups are puzzle_groups[p]:puzzle_groups[p + 1]
    group_candidates: np.ndarray  # int64 [groups + 1]: group g's candidates, ranked, likewise
    count: np.ndarray  # int64 [candidates]: rows that predicted it
    confidence: np.ndarray  # float64 [candidates]: mean sigmoid(q_halt) over those rows
    first_row: np.ndarray  # int64 [candidates]: the first of those rows
    correct: np.ndarray  # bool [candidates]: equal to the label (shape and every cell)
    pixel_accuracy: np.ndarray  # float64 [candidates]: see ``pixel_agreement``
    grids: np.ndarray  # uint8 [candidates, 30, 30]: canvases (grid at the top-left, FILL elsewhere)
    shapes: np.ndarray  # int64 [candidates, 2]
    row_candidate: np.ndarray  # int64 [rows]: each row's candidate, -1 for a blank row
    row_confidence: np.ndarray  # float64 [rows]: sigmoid(q_halt)

    def grid(self, candidate: int) -> np.ndarray:
        """A candidate's grid in the original frame, uint8 [rows, cols]."""
        rows, cols = self.shapes[candidate]
        return self.grids[candidate, :rows, :cols]

    def ranked(self, group: int) -> range:
        """A group's candidates, best first."""
        return range(int(self.group_candidates[group]), int(self.group_candidates[group + 1]))


def vote(identifiers: np.ndarray, boards: np.ndarray, q_halt_logits: np.ndarray, test_index: np.ndarray,
         lineage: Lineage, labels: Mapping[str, Sequence[np.ndarray]]) -> Votes:
    """The notebook's vote. One row per prediction: ``identifiers`` int [rows] (the version's puzzle
    identifier, 0 the blank: the row is dropped), ``boards`` uint8 [rows, 900] (predicted tokens in
    the version's frame), ``q_halt_logits`` float [rows], ``test_index`` int [rows] (the test input's
    position in its puzzle's test list, ``position_in_version``); ``labels`` per puzzle its test
    outputs (``labels_by_puzzle``): every puzzle scored, also one without predictions."""
    identifiers = np.asarray(identifiers, dtype=np.int64)
    puzzles, puzzle_groups, row_group = _row_groups(identifiers, np.asarray(test_index, np.int64), lineage, labels)
    kept = np.flatnonzero(row_group >= 0)
    canvases, shapes = map_back(np.asarray(boards).reshape(len(identifiers), SIDE * SIDE)[kept],
                                lineage.transform[identifiers[kept]], lineage.colour_maps[identifiers[kept]])
    row_confidence = sigmoid(np.asarray(q_halt_logits).reshape(-1))
    # A candidate is one (group, distinct grid); the canvas alone tells grids apart (FILL marks the shape).
    grid_id = np.unique(canvases.reshape(len(kept), SIDE * SIDE).view(np.dtype((np.void, SIDE * SIDE))).ravel(),
                        return_inverse=True)[1].reshape(-1)
    key = row_group[kept] * (int(grid_id.max(initial=0)) + 1) + grid_id
    _, first, inverse, count = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    confidence = np.bincount(inverse, weights=row_confidence[kept], minlength=len(count)) / np.maximum(count, 1)
    group = row_group[kept][first]
    order = np.lexsort((first, -confidence, -count, group))  # last key first: group, count, confidence, first row
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(len(order))
    row_candidate = np.full(len(identifiers), -1, dtype=np.int64)
    row_candidate[kept] = rank_of[inverse]
    chosen, group = first[order], group[order]
    label_canvases, label_shapes = _label_canvases(puzzles, labels)
    correct, pixel_accuracy = pixel_agreement(canvases[chosen], shapes[chosen], label_canvases[group], label_shapes[group])
    return Votes(puzzles, puzzle_groups, np.searchsorted(group, np.arange(puzzle_groups[-1] + 1)),
                 count[order].astype(np.int64), confidence[order], kept[chosen], correct, pixel_accuracy,
                 canvases[chosen], shapes[chosen], row_candidate, row_confidence)


def _row_groups(identifiers, test_index, lineage: Lineage, labels):
    """(puzzles, puzzle_groups, each row's group or -1 for a blank row); a ValueError naming an
    identifier, a puzzle or a test index that does not fit."""
    puzzles = tuple(labels)
    tests = np.array([len(labels[name]) for name in puzzles], dtype=np.int64)
    if not puzzles or (tests == 0).any():
        raise ValueError("labels must name at least one puzzle, each with at least one test output")
    puzzle_groups = np.concatenate([[0], np.cumsum(tests)])
    bad = (identifiers < 0) | (identifiers >= len(lineage.source))
    if bad.any():
        raise ValueError(f"row {int(np.argmax(bad))}: puzzle identifier {identifiers[bad][0]} is not in the lineage "
                         f"(0..{len(lineage.source) - 1})")
    position = {name: i for i, name in enumerate(puzzles)}
    puzzle_of_source = np.array([position.get(name, -1) for name in lineage.sources] + [-1], dtype=np.int64)
    source = lineage.source[identifiers]
    puzzle = puzzle_of_source[source]  # a blank row's source -1 picks the trailing -1
    unknown = (source >= 0) & (puzzle < 0)
    if unknown.any():
        raise ValueError(f"row {int(np.argmax(unknown))}: puzzle {lineage.sources[source[unknown][0]]} has no labels")
    kept = source >= 0
    out_of_range = kept & ((test_index < 0) | (test_index >= tests[puzzle]))
    if out_of_range.any():
        row = int(np.argmax(out_of_range))
        raise ValueError(f"row {row}: puzzle {puzzles[puzzle[row]]} has {tests[puzzle[row]]} test inputs, "
                         f"test index {test_index[row]} is outside them")
    return puzzles, puzzle_groups, np.where(kept, puzzle_groups[puzzle] + test_index, -1)


def _label_canvases(puzzles, labels) -> tuple[np.ndarray, np.ndarray]:
    grids = [np.asarray(g, dtype=np.uint8) for name in puzzles for g in labels[name]]
    return np.stack([_canvas(g) for g in grids]), np.array([g.shape for g in grids], dtype=np.int64)


def pixel_agreement(canvases: np.ndarray, shapes: np.ndarray, label_canvases: np.ndarray,
                    label_shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grids against their labels, both as canvases [n, 30, 30] and shapes [n, 2] -> (exact bool [n],
    per-pixel accuracy float64 [n]). Per-pixel accuracy: both grids anchored at the top-left, the
    cells equal on their overlap divided by the cells of their union (prediction + label - overlap),
    so a missing or extra row or column counts as wrong cells, a shape mismatch is never 1, an
    empty prediction is 0, and equal shapes give the plain fraction of equal cells."""
    n = len(canvases)
    matches = np.zeros(n, dtype=np.int64)
    for start in range(0, n, CHUNK_ROWS):
        part = slice(start, start + CHUNK_ROWS)
        same = (canvases[part] == label_canvases[part]) & (canvases[part] != FILL)
        matches[part] = same.reshape(len(same), -1).sum(axis=1)
    overlap = np.minimum(shapes, label_shapes).prod(axis=1)
    union = shapes.prod(axis=1) + label_shapes.prod(axis=1) - overlap
    exact = (shapes == label_shapes).all(axis=1) & (matches == label_shapes.prod(axis=1))
    return exact, matches / np.maximum(union, 1)


# ---------------------------------------------------------------- pass@k and the submission


def pass_at_k(votes: Votes, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """pass@k for each k under both rules, over every labelled puzzle:
    ``official_all_tests`` (arc_eval.ipynb): puzzles whose every test input has its label among its
    top k candidates, and their fraction of the puzzles; ``trm_fractional`` (TRM's evaluator): the
    sum over puzzles of the fraction of their test inputs that do, and that sum over the puzzles;
    ``test_inputs_right``: the (puzzle, test input) groups that do."""
    groups = len(votes.group_candidates) - 1
    per_group = np.diff(votes.group_candidates)
    candidate_group = np.repeat(np.arange(groups), per_group)
    rank = np.arange(len(candidate_group)) - votes.group_candidates[candidate_group]
    best = np.full(groups, np.iinfo(np.int64).max)  # best rank of a right candidate; max when none
    np.minimum.at(best, candidate_group[votes.correct], rank[votes.correct])
    tests = np.diff(votes.puzzle_groups)
    puzzles = len(tests)
    result: dict = {"puzzles": puzzles, "test_inputs": groups}
    for k in ks:
        right = best < int(k)
        right_per_puzzle = np.add.reduceat(right.astype(np.int64), votes.puzzle_groups[:-1])
        solved = int((right_per_puzzle == tests).sum())
        credit = float((right_per_puzzle / tests).sum())
        result[f"pass@{int(k)}"] = {
            "official_all_tests": {"puzzles": solved, "fraction": solved / puzzles},
            "trm_fractional": {"credit": credit, "fraction": credit / puzzles},
            "test_inputs_right": int(right.sum()),
        }
    return result


def submission(votes: Votes, attempts: int = 2) -> dict[str, list[dict[str, list[list[int]]]]]:
    """The Kaggle submission: per puzzle, one entry per test input in its test order, each
    ``{"attempt_1": grid, ..., "attempt_<attempts>": grid}`` (lists of lists of ints) from its top
    candidates. Fewer candidates than attempts: the first is repeated (TRM's convention). None:
    every attempt is ``[[0]]``, so the entry list still lines up with the test inputs (TRM leaves
    that entry out)."""
    out = {}
    for p, name in enumerate(votes.puzzles):
        entries = []
        for group in range(int(votes.puzzle_groups[p]), int(votes.puzzle_groups[p + 1])):
            grids = [votes.grid(c).tolist() for c in votes.ranked(group)[:attempts]]
            grids = grids or [[list(row) for row in EMPTY_ATTEMPT]]
            grids += [grids[0]] * (attempts - len(grids))
            entries.append({f"attempt_{i + 1}": grid for i, grid in enumerate(grids)})
        out[name] = entries
    return out


# ---------------------------------------------------------------- the halting head's calibration


def calibration_study(votes: Votes, bins: int = 10) -> dict:
    """The halting head's calibration, at two levels, each with its reliability bins, ECE and
    Pearson r (``hrm.evaluate.calibration``):
    ``per_prediction``: every prediction row, sigmoid(q_halt) against its own answer being exact;
    what the head is trained to predict, so this measures the head itself;
    ``per_test_input_top1``: every (puzzle, test input) with predictions, its top candidate's mean
    confidence against that candidate being right; what the vote submits at pass@1.
    ``pixel_accuracy``: per prediction row, per-pixel accuracy (``pixel_agreement``) against
    sigmoid(q_halt): the mean per confidence bin and Pearson r (high confidence, few right cells)."""
    rows = np.flatnonzero(votes.row_candidate >= 0)
    confidence = votes.row_confidence[rows]
    candidate = votes.row_candidate[rows]
    has = np.diff(votes.group_candidates) > 0
    top = votes.group_candidates[:-1][has]
    levels = {"per_prediction": (confidence, votes.correct[candidate]),
              "per_test_input_top1": (votes.confidence[top], votes.correct[top])}
    out = {}
    for name, (conf, ok) in levels.items():
        histogram = calibration(conf, ok, bins)
        out[name] = {**histogram.summary(), "bins": histogram.table()}
    out["pixel_accuracy"] = binned_means(confidence, votes.pixel_accuracy[candidate], bins)
    return out


def binned_means(confidence: np.ndarray, value: np.ndarray, bins: int = 10) -> dict:
    """A float ``value`` against confidence: per bin (the calibration histogram's bins: [b/bins,
    (b+1)/bins), the last closed) the count and mean confidence and value; the overall means and
    Pearson r (None when either side is constant or there are fewer than 2 points)."""
    x = np.clip(np.asarray(confidence, np.float64).reshape(-1), 0.0, 1.0)
    y = np.asarray(value, np.float64).reshape(-1)
    index = np.minimum((x * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=x, minlength=bins)
    value_sum = np.bincount(index, weights=y, minlength=bins)
    table = [{"bin": b, "bin_low": b / bins, "bin_high": (b + 1) / bins, "count": int(count[b]),
              "confidence": float(conf_sum[b] / count[b]) if count[b] else None,
              "value": float(value_sum[b] / count[b]) if count[b] else None} for b in range(bins)]
    return {"n": int(x.size), "mean_confidence": float(x.mean()) if x.size else None,
            "mean_value": float(y.mean()) if y.size else None, "pearson_r": pearson(x, y), "bins": table}


def pearson(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    """Pearson's r of two float vectors; None when fewer than 2 points or either is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    scale = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / scale) if scale > 1e-12 else None


# ---------------------------------------------------------------- a dataset split, scored


@dataclass(frozen=True)
class SplitScore:
    """One checkpoint's predictions on a test split, scored (:func:`score_split`)."""

    votes: Votes
    pass_at_k: dict
    calibration: dict
    submission: dict


def score_split(names: Sequence[str], identifiers: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                q_halt_logits: np.ndarray, ks: Sequence[int] = DEFAULT_KS, bins: int = 10) -> SplitScore:
    """Score the predictions on every row of a test split as the pipeline builds it (hrm/arc_examples.py:
    versions are runs of one ``identifiers`` value, their rows in the puzzle's test order, nothing
    translated): ``names`` the dataset's identifiers.json, ``labels`` and ``predictions`` uint8 [rows, 900]
    boards, ``q_halt_logits`` float [rows]. The labels compared with are the puzzles' own versions' (the
    identity), read back from their boards."""
    identifiers = np.asarray(identifiers, dtype=np.int64)
    lineage = lineage_from_names(names)
    starts = np.flatnonzero(np.concatenate([[True], identifiers[1:] != identifiers[:-1]])) if len(identifiers) \
        else np.zeros(0, np.int64)
    test_index = position_in_version(np.append(starts, len(identifiers)))
    own = (lineage.transform[identifiers] == 0) & (lineage.colour_maps[identifiers] == np.arange(NUM_COLOURS)).all(1)
    truth: dict[str, list[np.ndarray]] = {}
    for row in np.flatnonzero(own):
        truth.setdefault(lineage.sources[lineage.source[identifiers[row]]], []).append(decode_board(labels[row]))
    votes = vote(identifiers, predictions, q_halt_logits, test_index, lineage, truth)
    return SplitScore(votes, pass_at_k(votes, ks), calibration_study(votes, bins), submission(votes))
