"""ARC-AGI examples: the augment stage's build of a subsample's puzzles, with every row's lineage.

Library code: arrays in, arrays out. The rules are hrm/arc.py's (the official builder's: versions of
a puzzle by dihedral transform and colour permutation, deduplicated by content; the official split;
translation of train-split grids, one example per version left at the origin; identifiers numbered
train split first, 0 the blank). What this module adds is the layout the pipeline's tables use:

- one row per (version, pair) of a split: a group per puzzle (in order of first appearance, train
  split first), inside it the versions in draw order (the puzzle itself first, the rows marked
  ``original``), inside a version its pairs in the task object's order; the official arrays'
  ``puzzle_indices`` / ``group_indices`` are the runs of ``identifier`` / ``group_id``;
- each row's lineage: ``origin`` (the row of the split's subsample table its pair comes from),
  ``identifier``, ``dihedral``, ``colour_map`` and ``offset``;
- the draws of a puzzle come from its own generator, ``default_rng([seed, crc32(name)])``: a puzzle
  gets the same versions and offsets whichever other puzzles the subsample holds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np

import hrm.arc as arc
from hrm.encoding import numba_kernel


@dataclass(frozen=True)
class ArcTransforms:
    """What took each row from its original pair (hrm.build.Examples.transforms of an ARC table)."""

    identifier: np.ndarray  # int32 [N]: the version's puzzle identifier (0 the blank, never in a table)
    dihedral: np.ndarray  # uint8 [N]: hrm.arc.dihedral id
    colour_map: np.ndarray  # uint8 [N, 10]: colour c became colour_map[c]
    offset: np.ndarray  # uint8 [N, 2]: the grids' top-left cell on the board (row, column)

    def __getitem__(self, rows) -> "ArcTransforms":
        return ArcTransforms(self.identifier[rows], self.dihedral[rows], self.colour_map[rows], self.offset[rows])

    def __len__(self) -> int:
        return len(self.identifier)

    def is_identity(self) -> np.ndarray:
        """bool [N]: no transform and no recolouring (a translated original is still the original)."""
        return (self.dihedral == 0) & (self.colour_map == np.arange(arc.NUM_COLOURS)).all(axis=1)


@dataclass(frozen=True)
class SplitExamples:
    """One split's rows (see the module docstring)."""

    group_id: np.ndarray  # int32 [N]
    original: np.ndarray  # bool [N]: the row belongs to its puzzle's own version
    origin: np.ndarray  # int64 [N]: row of the split's subsample table
    inputs: np.ndarray  # uint8 [N, 900]
    labels: np.ndarray  # uint8 [N, 900]
    transforms: ArcTransforms


def table_puzzles(splits: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[list[arc.Puzzle], dict[str, list[np.ndarray]]]:
    """Puzzles from subsample tables (``splits[split]``: columns ``puzzle``, ``subset``, ``question``,
    ``answer`` of that split, rows of a puzzle in its task object's order), in order of first
    appearance, train split first; and per split, each puzzle's rows there (empty where it has none).
    A puzzle's pairs in the train split are its ``demonstrations``, those in the test split its
    ``tests`` (hrm.arc.split_pairs then gives each split its own rows back)."""
    names: dict[str, int] = {}
    subsets: list[str] = []
    for split in (arc.TRAIN, arc.TEST):
        for name, subset in zip(splits[split]["puzzle"], splits[split]["subset"]):
            if name not in names:
                names[name] = len(names)
                subsets.append(subset)
    rows = {split: _rows_by_puzzle(splits[split]["puzzle"], names) for split in (arc.TRAIN, arc.TEST)}
    puzzles = []
    for name, i in names.items():
        pairs = {split: tuple((arc.text_grid(splits[split]["question"][r]), arc.text_grid(splits[split]["answer"][r]))
                              for r in rows[split][i]) for split in rows}
        puzzles.append(arc.Puzzle(name, subsets[i], pairs[arc.TRAIN], pairs[arc.TEST]))
    return puzzles, rows


def _rows_by_puzzle(names: np.ndarray, index: Mapping[str, int]) -> list[np.ndarray]:
    ids = np.array([index[n] for n in names], dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    cuts = np.searchsorted(ids[order], np.arange(len(index) + 1))
    return [order[cuts[i] : cuts[i + 1]] for i in range(len(index))]


def puzzle_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def build_examples(puzzles: Sequence[arc.Puzzle], rows: Mapping[str, Sequence[np.ndarray]], num_aug: int,
                   seed: int) -> tuple[dict[str, SplitExamples], list[str]]:
    """Both splits' rows of ``puzzles`` (``rows``: table_puzzles'), with ``num_aug`` versions per
    puzzle at most; and the identifier names (index = identifier, 0 the blank)."""
    names = [arc.BLANK_NAME]
    (built,) = iter_examples(puzzles, rows, num_aug, seed, names, chunk_rows=0)  # one chunk: every puzzle
    return built, names


def iter_examples(puzzles: Sequence[arc.Puzzle], rows: Mapping[str, Sequence[np.ndarray]], num_aug: int,
                  seed: int, names: list[str], chunk_rows: int) -> Iterator[dict[str, SplitExamples]]:
    """build_examples a few puzzles at a time: each chunk the rows of whole puzzles in both splits, at
    least ``chunk_rows`` rows (0: all in one chunk), group ids counted on from the chunk before;
    ``names`` (holding the blank) grows by each puzzle's identifier names. A chunk's boards are encoded
    once its puzzles are drawn, straight into the chunk's arrays."""
    parts: dict[str, list] = {arc.TRAIN: [], arc.TEST: []}
    groups, held = {arc.TRAIN: 0, arc.TEST: 0}, 0
    for g, puzzle in enumerate(puzzles):
        content = arc._ContentKeys(puzzle)
        rng = puzzle_rng(seed, puzzle.name)
        transforms, maps = arc.draw_versions(content, num_aug, rng)
        first = len(names)
        names.extend(_version_names(puzzle.name, transforms, maps))
        for split in (arc.TRAIN, arc.TEST):
            if len(rows[split][g]):
                part = _group(content, puzzle, transforms, maps, split, groups[split], first, rows[split][g], rng)
                parts[split].append(part)
                groups[split] += 1
                held += len(part[0].group_id)
        if chunk_rows and held >= chunk_rows:
            yield {split: _encoded(p) for split, p in parts.items()}
            parts, held = {arc.TRAIN: [], arc.TEST: []}, 0
    if held or not chunk_rows:
        yield {split: _encoded(p) for split, p in parts.items()}


def _version_names(source: str, transforms: np.ndarray, maps: np.ndarray) -> list[str]:
    """hrm.arc.version_name of each version (the first the identity), without a loop over colours."""
    digits = (maps.astype(np.uint8) + ord("0")).tobytes().decode("ascii")
    width = arc.NUM_COLOURS
    return [source] + [f"{source}_t{int(t)}_{digits[i * width : (i + 1) * width]}"
                       for i, t in enumerate(transforms[1:].tolist(), start=1)]


def _group(content: "arc._ContentKeys", puzzle: arc.Puzzle, transforms: np.ndarray, maps: np.ndarray, split: str,
           group: int, first_identifier: int, table_rows: np.ndarray, rng: np.random.Generator) -> tuple:
    """One puzzle's rows in ``split``, every version's pairs there (translated in the train split): the
    rows without their boards, and what encodes them (_encoded)."""
    pairs = _split_pair_indices(puzzle, split)
    per, n = len(pairs), len(transforms)
    flat, starts, grid_shapes = content.grid_arrays()
    shapes = grid_shapes[:, 2 * pairs[:, None] + np.arange(2)][transforms].reshape(-1, 2, 2)  # [rows, in/out, 2]
    offsets = np.zeros((n * per, 2), dtype=np.int64)
    if split == arc.TRAIN:
        offsets = arc.translation_offsets(shapes, np.arange(n + 1, dtype=np.int64) * per, rng)
    transform_rows = ArcTransforms(
        identifier=np.repeat(np.arange(first_identifier, first_identifier + n, dtype=np.int32), per),
        dihedral=np.repeat(transforms.astype(np.uint8), per),
        colour_map=np.repeat(maps.astype(np.uint8), per, axis=0),
        offset=offsets.astype(np.uint8),
    )
    original = np.zeros(n * per, dtype=bool)
    original[:per] = True
    rows = SplitExamples(group_id=np.full(n * per, group, dtype=np.int32), original=original,
                         origin=np.tile(table_rows, n), inputs=None, labels=None, transforms=transform_rows)
    return rows, (flat, starts, grid_shapes, pairs, np.asarray(transforms, np.int64), maps, offsets)


def _split_pair_indices(puzzle: arc.Puzzle, split: str) -> np.ndarray:
    """The pairs of ``split`` (hrm.arc.split_pairs) as indices into ``puzzle.pairs()``."""
    demos, tests = len(puzzle.demonstrations), len(puzzle.tests)
    if not arc.is_evaluation(puzzle.subset):
        return np.arange(demos + tests) if split == arc.TRAIN else np.zeros(0, dtype=np.int64)
    start = (tests if puzzle.tests_first else 0) if split == arc.TRAIN else (0 if puzzle.tests_first else demos)
    return np.arange(start, start + (demos if split == arc.TRAIN else tests))


def _encoded(parts: list[tuple]) -> SplitExamples:
    """The parts' rows (_group's) in one SplitExamples, their boards encoded into one array per side."""
    rows = _concat([p for p, _ in parts])
    total = len(rows.group_id)
    boards = [np.zeros((total, arc.SEQ_LEN), dtype=np.uint8) for _ in (0, 1)]
    at = 0
    for part, encoding in parts:
        for side in (0, 1):
            _encode_rows(boards[side], at, side, *encoding)
        at += len(part.group_id)
    return SplitExamples(rows.group_id, rows.original, rows.origin, boards[0], boards[1], rows.transforms)


@numba_kernel
def _encode_rows(out, first_row, side, flat, starts, shapes, pairs, transforms, maps, offsets):
    """hrm.arc.encode_grids of one side (0 inputs, 1 outputs) of ``pairs`` in every version of a puzzle
    (rows version-major, from ``first_row`` of ``out``, which holds PAD): version v's grid is the puzzle's
    grid transformed (``flat[transform]``, cells from ``starts``, ``shapes[transform]``) recoloured by
    ``maps[v]``, at the row's offset."""
    side_len, per = 30, len(pairs)
    for v in range(len(transforms)):
        t = transforms[v]
        for k in range(per):
            row = v * per + k
            board = out[first_row + row]
            grid = 2 * pairs[k] + side
            h, w, start = shapes[t, grid, 0], shapes[t, grid, 1], starts[grid]
            r0, c0 = offsets[row, 0], offsets[row, 1]
            for i in range(h):
                for j in range(w):
                    board[(r0 + i) * side_len + c0 + j] = maps[v, flat[t, start + i * w + j]] + 2
            if r0 + h < side_len:  # EOS on the row below and the column right of the grid, inside the board
                for j in range(w):
                    board[(r0 + h) * side_len + c0 + j] = 1
            if c0 + w < side_len:
                for i in range(h):
                    board[(r0 + i) * side_len + c0 + w] = 1


def _concat(parts: list[SplitExamples]) -> SplitExamples:
    if not parts:
        empty = np.zeros(0, dtype=np.int32)
        return SplitExamples(empty, empty.astype(bool), empty.astype(np.int64), np.zeros((0, arc.SEQ_LEN), np.uint8),
                             np.zeros((0, arc.SEQ_LEN), np.uint8),
                             ArcTransforms(empty, empty.astype(np.uint8), np.zeros((0, arc.NUM_COLOURS), np.uint8),
                                           np.zeros((0, 2), np.uint8)))
    # Group ids as the parts number them (from 0 in each split's own order: a test split holds only some puzzles).
    return SplitExamples(
        group_id=np.concatenate([p.group_id for p in parts]),
        original=np.concatenate([p.original for p in parts]),
        origin=np.concatenate([p.origin for p in parts]),
        inputs=None if parts[0].inputs is None else np.concatenate([p.inputs for p in parts]),
        labels=None if parts[0].labels is None else np.concatenate([p.labels for p in parts]),
        transforms=ArcTransforms(*(np.concatenate([getattr(p.transforms, f) for p in parts])
                                   for f in ("identifier", "dihedral", "colour_map", "offset"))),
    )


CHECK_ROWS = 8192  # rows checked at a time: bounds the int64 index temporaries


def at_origin(boards: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boards [n, 900] moved so that each one's ``offsets`` [n, 2] cell is the top-left: uint8 [n, 30, 30],
    PAD where the move brings in cells from beyond the board (one slice copy per distinct offset)."""
    n, side = len(boards), arc.SIDE
    grid = np.asarray(boards, dtype=np.uint8).reshape(n, side, side)
    off = np.asarray(offsets, np.int64).reshape(n, 2)
    moved = np.full((n, side, side), arc.PAD, dtype=np.uint8)
    keys = off[:, 0] * side + off[:, 1]
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        dr, dc = divmod(int(key), side)
        moved[rows, : side - dr, : side - dc] = grid[rows, dr:, dc:]
    return moved


def well_encoded(boards: np.ndarray, moved: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """bool [n]: each board [900] is exactly one grid encoded at its offset (hrm.arc.encode_grids): colour
    tokens on the grid, EOS on the row below it and the column right of it where the board goes on, PAD
    everywhere else. ``moved``: the boards at_origin."""
    from hrm.arc_scoring import crop_shapes

    shape = crop_shapes(moved.reshape(len(moved), -1))
    h, w = shape[:, 0, None, None], shape[:, 1, None, None]
    r, c = np.arange(arc.SIDE)[None, :, None], np.arange(arc.SIDE)[None, None, :]
    off = np.asarray(offsets, np.int64)
    below = (off[:, 0, None, None] + h) < arc.SIDE  # an EOS row only where the grid stops short of the edge
    right = (off[:, 1, None, None] + w) < arc.SIDE
    grid = (r < h) & (c < w)
    eos = ((r == h) & (c < w) & below) | ((c == w) & (r < h) & right)
    cells_ok = np.where(grid, moved >= arc.COLOUR_OFFSET, np.where(eos, moved == arc.EOS, moved == arc.PAD)).all((1, 2))
    # Nothing left behind above or left of the offset: the board holds as many non-PAD cells as the moved one.
    kept = (np.asarray(boards).reshape(len(moved), -1) != arc.PAD).sum(1) == (moved != arc.PAD).reshape(len(moved), -1).sum(1)
    return cells_ok & kept & (shape[:, 0] > 0)


def _original_grids(boards: np.ndarray, offsets: np.ndarray, transforms: np.ndarray, colour_maps: np.ndarray):
    """(well encoded [n], the grids mapped back to the original frame: canvases [n, 30, 30], shapes [n, 2])."""
    from hrm.arc_scoring import map_back

    moved = at_origin(boards, offsets)
    canvases, shapes = map_back(moved.reshape(len(moved), -1), transforms, colour_maps)
    return well_encoded(boards, moved, offsets), canvases, shapes


def matches_original(transforms: ArcTransforms, rows: np.ndarray, src: np.ndarray, inputs: np.ndarray,
                     labels: np.ndarray) -> np.ndarray:
    """bool [len(rows)]: row ``rows[i]``'s boards are row ``src[i]``'s grids (read at its offset),
    recoloured and transformed by row ``rows[i]``'s transform, encoded at its own offset: both rows' boards
    are well encoded, and row ``rows[i]``'s grids mapped back (inverse transform, inverse colour map) equal
    the source's. Compiled, one pass over each board (``matches_original_reference`` is the same check
    in numpy, and the definition); an offset off the board or a dihedral id over 7 fails."""
    rows, src = np.asarray(rows, np.int64), np.asarray(src, np.int64)
    offsets = np.asarray(transforms.offset, np.int64).reshape(-1, 2)
    dihedrals = np.asarray(transforms.dihedral, np.int64)
    sources, which = np.unique(src, return_inverse=True)  # each original once (it has many augmented pairs)
    inverse = np.argsort(transforms.colour_map[rows], axis=1).astype(np.int64)  # as hrm.arc_scoring.map_back
    ok = np.ones(len(rows), dtype=bool)
    for boards in (np.ascontiguousarray(inputs, np.uint8), np.ascontiguousarray(labels, np.uint8)):
        mine = _encoded_shapes(boards, rows, offsets)
        theirs = _encoded_shapes(boards, sources, offsets)
        ok &= _same_grids(boards, rows, sources[which.reshape(-1)], offsets, dihedrals, inverse, mine,
                          theirs[which.reshape(-1)])
    return ok


@numba_kernel
def _encoded_shapes(boards, rows, offsets):
    """int64 [len(rows), 3]: (well encoded 0/1, grid rows, grid columns) of each row's board read at its
    offset: the crop of hrm.arc_scoring.crop_shapes there, and the board exactly that grid encoded at the
    offset (colour tokens on it, EOS below and right of it where the board goes on, PAD elsewhere)."""
    side = 30
    out = np.zeros((len(rows), 3), dtype=np.int64)
    for k in range(len(rows)):
        board, r0, c0 = boards[rows[k]], offsets[rows[k], 0], offsets[rows[k], 1]
        if r0 >= side or c0 >= side:
            continue
        narrowest, best, h, w = side, 0, 0, 0
        for i in range(side - r0):
            lead = 0
            while lead < side - c0 and 2 <= board[(r0 + i) * side + c0 + lead] < 12:
                lead += 1
            narrowest = min(narrowest, lead)
            if narrowest * (i + 1) > best:
                best, h, w = narrowest * (i + 1), i + 1, narrowest
        good = h > 0
        for r in range(side):
            for c in range(side):
                x, i, j = board[r * side + c], r - r0, c - c0
                if i < 0 or j < 0:
                    good &= x == 0
                elif i < h and j < w:
                    good &= x >= 2
                elif (i == h and j < w and r0 + h < side) or (j == w and i < h and c0 + w < side):
                    good &= x == 1
                else:
                    good &= x == 0
        out[k, 0], out[k, 1], out[k, 2] = good, h, w
    return out


@numba_kernel
def _same_grids(boards, rows, src, offsets, dihedrals, inverse, mine, theirs):
    """bool [len(rows)]: both boards well encoded, and row ``rows[k]``'s grid, its colours mapped by
    ``inverse[k]`` and moved by the inverse of its dihedral transform, is ``src[k]``'s grid."""
    side = 30
    undo = (0, 3, 2, 1, 4, 5, 6, 7)  # hrm.arc.INVERSE
    out = np.zeros(len(rows), dtype=np.bool_)
    for k in range(len(rows)):
        t = dihedrals[rows[k]]
        if mine[k, 0] == 0 or theirs[k, 0] == 0 or t > 7:
            continue
        h, w, hs, ws = mine[k, 1], mine[k, 2], theirs[k, 1], theirs[k, 2]
        t = undo[t]
        turned = t == 1 or t == 3 or t == 6 or t == 7  # rows and columns swap
        if (turned and (w != hs or h != ws)) or (not turned and (h != hs or w != ws)):
            continue
        board, other = boards[rows[k]], boards[src[k]]
        r0, c0, rs, cs = offsets[rows[k], 0], offsets[rows[k], 1], offsets[src[k], 0], offsets[src[k], 1]
        same = True
        for i in range(h):
            for j in range(w):
                # Where hrm.arc.dihedral(., t) takes cell (i, j) of an h x w grid.
                p, q = ((i, j), (w - 1 - j, i), (h - 1 - i, w - 1 - j), (j, h - 1 - i), (i, w - 1 - j),
                        (h - 1 - i, j), (j, i), (w - 1 - j, h - 1 - i))[t]
                colour = inverse[k, board[(r0 + i) * side + c0 + j] - 2]
                same &= colour == other[(rs + p) * side + cs + q] - 2
        out[k] = same
    return out


def matches_original_reference(transforms: ArcTransforms, rows: np.ndarray, src: np.ndarray, inputs: np.ndarray,
                               labels: np.ndarray) -> np.ndarray:
    """matches_original in numpy, ``CHECK_ROWS`` rows at a time: each board moved to its offset, cropped,
    checked for its encoding and mapped back (hrm.arc_scoring.map_back)."""
    ok = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), CHECK_ROWS):
        part = slice(start, start + CHECK_ROWS)
        ok[part] = _matches_chunk(transforms, np.asarray(rows[part]), np.asarray(src[part]), inputs, labels)
    return ok


def _matches_chunk(t: ArcTransforms, rows: np.ndarray, src: np.ndarray, inputs: np.ndarray,
                   labels: np.ndarray) -> np.ndarray:
    sources, which = np.unique(src, return_inverse=True)  # each original once (it has many augmented pairs)
    identity = np.broadcast_to(np.arange(arc.NUM_COLOURS, dtype=np.uint8), (len(sources), arc.NUM_COLOURS))
    ok = np.ones(len(rows), dtype=bool)
    for boards in (inputs, labels):
        mine_ok, mine, mine_shape = _original_grids(boards[rows], t.offset[rows], t.dihedral[rows], t.colour_map[rows])
        src_ok, theirs, their_shape = _original_grids(boards[sources], t.offset[sources],
                                                      np.zeros(len(sources), np.int64), identity)
        which = which.reshape(-1)
        ok &= mine_ok & src_ok[which] & (mine_shape == their_shape[which]).all(1)
        ok &= (mine == theirs[which]).all((1, 2))
    return ok
